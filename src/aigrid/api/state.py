"""The objects one running server shares between its routes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from starlette.requests import HTTPConnection

from aigrid.api.auth import KeyRing
from aigrid.api.config_sync import ConfigSync
from aigrid.config import ServerConfig
from aigrid.entry.registry import ServiceRegistry
from aigrid.entry.service import EntryService
from aigrid.grid.service import Grid
from aigrid.kernel.compiler import Compiler
from aigrid.kernel.inbox import Inbox
from aigrid.kernel.kernel import Kernel
from aigrid.kernel.providers.manager import ProviderManager
from aigrid.kernel.tools import ToolRegistry
from aigrid.kernel.triggers import TriggerService
from aigrid.learn.datasets import DatasetBuilder
from aigrid.learn.evals import EvalService
from aigrid.learn.experience import ExperienceMemory
from aigrid.learn.feedback import FeedbackService
from aigrid.learn.lessons import Teacher
from aigrid.learn.loop import SelfTraining
from aigrid.learn.models import LearnedModels
from aigrid.learn.recorder import CompileRecorder
from aigrid.store.accounts import AccountStore
from aigrid.store.agents import AgentStore
from aigrid.store.cluster import Membership
from aigrid.store.processes import ProcessStore
from aigrid.store.traces import TraceStore


@dataclass
class LearnParts:
    """The learning loop: traces, feedback, the experience memory, evals and teaching."""

    traces: TraceStore
    feedback: FeedbackService
    memory: ExperienceMemory
    evals: EvalService
    teacher: Teacher
    compiles: CompileRecorder
    datasets: DatasetBuilder
    models: LearnedModels
    loop: SelfTraining


@dataclass
class KernelParts:
    """The kernel and what runs beside it: what start-up builds on top of the grid."""

    kernel: Kernel
    tools: ToolRegistry
    providers: ProviderManager
    agents: AgentStore
    processes: ProcessStore
    triggers: TriggerService
    inbox: Inbox
    compiler: Compiler
    services: ServiceRegistry
    entries: EntryService
    learn: LearnParts


@dataclass
class AppState(KernelParts):
    """Everything a route needs: the kernel's parts, the grid, the key ring, the accounts and the database."""

    config: ServerConfig
    data_dir: Path
    engine: Engine
    accounts: AccountStore
    keyring: KeyRing
    grid: Grid
    membership: Membership
    config_sync: ConfigSync


def state_of(conn: HTTPConnection) -> AppState:
    """The server state behind a request."""
    state: AppState = conn.app.state.aigrid
    return state
