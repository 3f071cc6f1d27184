"""LoRA on the embedded model, on the CPU, in a process of its own: ``python -m aigrid.learn.train JOB``.

The job folder holds ``job.json`` (the base GGUF, the dataset, the settings). The trainer reads the
base weights from the GGUF with ``transformers`` (which dequantizes them), wraps the model with a
``peft`` LoRA, and trains on the dataset's answers only: the prompt's tokens carry no loss, and the
output layer runs on the answer's positions alone (most of a planner example is prompt). Prompts
are tokenized exactly as the server does (the GGUF's own chat template and llama.cpp's tokenizer), so
the student learns the token sequences it will be served.

Every ``checkpoint_every`` steps the adapter, the optimizer and the step are saved; a job started
again in the same folder goes on from there. Progress goes to standard output as JSON lines
(``{"event": "step", ...}``) with the time left, for whoever started the job. At the end the adapter
is turned into a GGUF LoRA adapter by llama.cpp's own converter, which the engine loads beside the
base weights.

PyTorch, ``transformers`` and ``peft`` are the optional extra ``aigrid[learn]``; nothing here imports
them until a job runs, so the server never loads them.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

JOB_FILE = "job.json"
ADAPTER_GGUF = "adapter.gguf"
MERGED_GGUF = "model.gguf"
CHECKPOINT = "checkpoint.pt"
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# CPU flags whose bf16 matrix units make bf16 autocast faster than fp32 (and as accurate at the start).
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
CONVERTER = "convert_lora_to_gguf.py"
_IGNORE = -100


class TrainingError(RuntimeError):
    """A job that cannot run, with what to do about it."""


class TrainJob(BaseModel):
    """What one training run does; written to the job folder as ``job.json``."""

    model_config = ConfigDict(extra="forbid")

    base: str
    dataset: str
    rank: int = Field(default=16, ge=1, le=256)
    alpha: int = Field(default=32, ge=1, le=4096)
    # LoRA on the top N decoder layers only (all when None): the backward pass stops below the
    # lowest adapted layer, so fewer layers make a step cheaper.
    layers: int | None = Field(default=None, ge=1, le=1024)
    learning_rate: float = Field(default=3e-4, gt=0, le=1)
    epochs: float = Field(default=1.0, gt=0, le=100)
    max_steps: int | None = Field(default=None, ge=1, le=1_000_000)
    # Padded tokens per optimizer step: bounds the activations' memory.
    batch_tokens: int = Field(default=2048, ge=64, le=65_536)
    # Examples longer than this are left out (and counted).
    max_tokens: int = Field(default=2048, ge=16, le=32_768)
    threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=1024)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    checkpoint_every: int = Field(default=10, ge=1, le=1_000_000)
    precision: Literal["auto", "fp32", "bf16"] = "auto"

    def to_json(self) -> dict[str, Any]:
        """The job as ``job.json`` holds it."""
        return self.model_dump()

    @classmethod
    def read(cls, folder: Path) -> TrainJob:
        """The job of a folder; TrainingError if it has none or a malformed one."""
        try:
            return cls.model_validate_json((folder / JOB_FILE).read_bytes())
        except FileNotFoundError as exc:
            raise TrainingError(f"no {JOB_FILE} in {folder}") from exc
        except ValidationError as exc:
            raise TrainingError(f"{folder / JOB_FILE} is not a training job: {exc}") from exc

    def write(self, folder: Path) -> None:
        """Write ``job.json`` into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / JOB_FILE).write_text(json.dumps(self.to_json(), indent=2), encoding="utf-8")


def settings_problem(exc: ValidationError) -> str:
    """A training settings error in one sentence, naming the setting."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "settings"
    return f"'{where}': {first['msg']}"


def choose_precision(setting: str, flags: frozenset[str] | None) -> str:
    """``bf16`` where the CPU has bf16 matrix units and the setting allows, else ``fp32``."""
    if setting in ("fp32", "bf16"):
        return setting
    return "bf16" if flags is not None and any(f in flags for f in BF16_FLAGS) else "fp32"


def converter_path() -> Path | None:
    """llama.cpp's ``convert_lora_to_gguf.py``: ``AIGRID_LLAMA_CPP`` or the one ``make`` unpacked."""
    named = os.environ.get("AIGRID_LLAMA_CPP")
    folders = [Path(named)] if named else []
    folders.append(Path(sys.prefix) / "share" / "aigrid" / "llama.cpp")
    return next((f / CONVERTER for f in folders if (f / CONVERTER).is_file()), None)


def missing_dependencies() -> list[str]:
    """The training extra's packages that are not installed."""
    import importlib.util

    wanted = ("torch", "transformers", "peft", "safetensors", "gguf")
    return [name for name in wanted if importlib.util.find_spec(name) is None]


def batches(lengths: list[int], batch_tokens: int, seed: int) -> list[list[int]]:
    """Example indices grouped by length so that each group's padded size stays under
    ``batch_tokens`` (one example per group at least), in a shuffled order fixed by ``seed``."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and lengths[i] * (len(current) + 1) > batch_tokens:
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    random.Random(seed).shuffle(groups)
    return groups


class _Progress:
    """JSON lines on standard output: what a parent process reads to show a bar with the time left."""

    def __init__(self, total: int, done: int) -> None:
        self.total = total
        self.first = done
        self.started = time.monotonic()

    def step(self, step: int, loss: float, tokens: int) -> None:
        elapsed = time.monotonic() - self.started
        rate = (step - self.first) / elapsed if elapsed > 0 else 0.0
        left = (self.total - step) / rate if rate > 0 else None
        emit(
            "step",
            step=step,
            steps=self.total,
            loss=round(loss, 4),
            tokens=tokens,
            elapsed_s=round(elapsed, 1),
            eta_s=None if left is None else round(left, 1),
        )


def emit(event: str, **values: Any) -> None:
    """One progress line."""
    print(json.dumps({"event": event, **values}), flush=True)


def _examples(job: TrainJob) -> list[dict[str, Any]]:
    rows = []
    with open(job.dataset, encoding="utf-8") as lines:
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            messages = row.get("messages") if isinstance(row, dict) else None
            if not isinstance(messages, list) or not messages or messages[-1].get("role") != "assistant":
                raise TrainingError(f"{job.dataset}:{n}: not a chat example ending in the assistant's answer")
            rows.append(row)
    if not rows:
        raise TrainingError(f"{job.dataset} has no examples")
    return rows


def encode(rows: list[dict[str, Any]], base: Path, max_tokens: int) -> tuple[list[list[int]], list[int]]:
    """Each example's tokens and where its answer starts, as the server tokenizes; too long ones out."""
    from aigrid.grid.backends.embedded_prompt import RequestReader
    from aigrid.grid.engine.cpu import choose_extra_buffers
    from aigrid.grid.engine.model import load_vocabulary

    vocab = load_vocabulary(base, choose_extra_buffers("off", None))
    try:
        reader = RequestReader(vocab, context_length=1 << 20, max_output_tokens=None, embed_context=1)
        eos = int(vocab.token_eos())
        sequences: list[list[int]] = []
        starts: list[int] = []
        for row in rows:
            messages = row["messages"]
            prompt = reader.chat_tokens(messages[:-1])
            answer = vocab.tokenize(
                str(messages[-1]["content"]).encode("utf-8"), add_bos=False, special=False
            )
            tokens = [*prompt, *answer, eos]
            if len(tokens) <= max_tokens:
                sequences.append(tokens)
                starts.append(len(prompt))
        return sequences, starts
    finally:
        vocab.close()


def run(folder: Path) -> tuple[Path, Path]:
    """Train the job in ``folder`` (going on from its checkpoint): the GGUF adapter and merged model."""
    missing = missing_dependencies()
    if missing:
        raise TrainingError(
            f"training needs the 'learn' extra ({', '.join(missing)} missing): "
            "pip install 'aigrid[learn]' torch==2.13.0"
        )
    converter = converter_path()
    if converter is None:
        raise TrainingError(
            f"llama.cpp's {CONVERTER} was not found: set AIGRID_LLAMA_CPP to the llama.cpp source folder "
            "(make install-learn unpacks it from the llama-cpp-python sdist)"
        )
    job = TrainJob.read(folder)
    base = Path(job.base)
    if not base.is_file():
        raise TrainingError(f"base model not found: {base}")
    rows = _examples(job)
    sequences, starts = encode(rows, base, job.max_tokens)
    if not sequences:
        raise TrainingError(f"every example is longer than max_tokens={job.max_tokens}")
    emit("data", examples=len(rows), kept=len(sequences), too_long=len(rows) - len(sequences))
    _train(job, folder, sequences, starts)
    adapter = _convert(folder, converter)
    return adapter, _merge(base, adapter, folder / MERGED_GGUF)


def _merge(base: Path, adapter: Path, out: Path) -> Path:
    """The adapter merged into the base weights: served at the base's speed (see aigrid.learn.merge)."""
    from aigrid.learn.merge import MergeError, merge_adapter

    started = time.monotonic()
    try:
        merged = merge_adapter(base, adapter, out)
    except MergeError as exc:
        raise TrainingError(f"the adapter could not be merged: {exc}") from exc
    emit("merged", path=str(out), seconds=round(time.monotonic() - started, 1), **merged)
    return out


def _train(job: TrainJob, folder: Path, sequences: list[list[int]], starts: list[int]) -> None:
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    from aigrid.grid.engine.cpu import host_cpu_flags

    torch.manual_seed(job.seed)
    torch.set_num_threads(job.threads)
    precision = choose_precision(job.precision, host_cpu_flags())
    started = time.monotonic()
    base = Path(job.base)
    model = AutoModelForCausalLM.from_pretrained(str(base.parent), gguf_file=base.name, dtype=torch.float32)
    emit("loaded", seconds=round(time.monotonic() - started, 1), precision=precision)
    depth = int(model.config.num_hidden_layers)
    if job.layers is not None and job.layers > depth:
        raise TrainingError(f"layers is {job.layers}, but the model has {depth} decoder layers")
    lora = LoraConfig(
        r=job.rank,
        lora_alpha=job.alpha,
        target_modules=list(LORA_TARGETS),
        layers_to_transform=None if job.layers is None else list(range(depth - job.layers, depth)),
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=job.learning_rate, weight_decay=0.0)
    groups = batches([len(s) for s in sequences], job.batch_tokens, job.seed)
    total = job.max_steps or max(1, math.ceil(len(groups) * job.epochs))
    step = 0
    checkpoint = folder / CHECKPOINT
    if checkpoint.is_file():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        set_peft_model_state_dict(peft_model, saved["adapter"])
        optimizer.load_state_dict(saved["optimizer"])
        step = int(saved["step"])
        emit("resumed", step=step, steps=total)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1 - s / total))
    for _ in range(step):
        schedule.step()
    core: Any = peft_model.get_base_model()
    pad = int(model.config.pad_token_id or 0)
    progress = _Progress(total, step)
    peft_model.train()
    while step < total:
        group = groups[step % len(groups)]
        width = max(len(sequences[i]) for i in group)
        ids = torch.full((len(group), width), pad, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        targets = torch.full((len(group), width), _IGNORE, dtype=torch.long)
        for row, i in enumerate(group):
            seq = torch.tensor(sequences[i])
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
            # Position t predicts token t + 1: the answer's tokens are the targets.
            targets[row, starts[i] - 1 : len(seq) - 1] = seq[starts[i] :]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            hidden = core.model(input_ids=ids, attention_mask=mask).last_hidden_state
            chosen = targets != _IGNORE
            logits = core.lm_head(hidden[chosen]).float()
        loss = torch.nn.functional.cross_entropy(logits, targets[chosen])
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if step % job.checkpoint_every == 0 or step == total:
            partial = checkpoint.with_suffix(".part")
            state = {
                "adapter": get_peft_model_state_dict(peft_model),
                "optimizer": optimizer.state_dict(),
                "step": step,
            }
            torch.save(state, partial)
            partial.replace(checkpoint)
        # Said after the checkpoint: a step that was reported is one a resumed job will not redo.
        progress.step(step, float(loss.item()), int(mask.sum().item()))
    peft_model.save_pretrained(str(folder / "adapter"))
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = ["LlamaForCausalLM"]
    (folder / "base").mkdir(exist_ok=True)
    (folder / "base" / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    emit("trained", steps=total, seconds=round(time.monotonic() - started, 1))


def _convert(folder: Path, converter: Path) -> Path:
    out = folder / ADAPTER_GGUF
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            str(converter),
            "--outfile",
            str(out),
            "--outtype",
            "f16",
            "--base",
            str(folder / "base"),
            str(folder / "adapter"),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    if done.returncode != 0 or not out.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise TrainingError(f"llama.cpp's converter failed: {' | '.join(tail)}")
    emit("converted", path=str(out), bytes=out.stat().st_size, seconds=round(time.monotonic() - started, 1))
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the job folder named on the command line; a clear message and exit 1 on failure."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m aigrid.learn.train JOB_FOLDER", file=sys.stderr)
        return 2
    try:
        adapter, model = run(Path(args[0]))
    except TrainingError as exc:
        emit("failed", error=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return 1
    emit("done", adapter=str(adapter), model=str(model))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
