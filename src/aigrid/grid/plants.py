"""Building the grid's plants from config: a backend per deployment, a route per model."""

from __future__ import annotations

from aigrid.config import DeploymentConfig, ModelConfig, ServerConfig
from aigrid.grid.backends.base import Backend
from aigrid.grid.router import CircuitBreaker, Deployment, Route


def build_backend(name: str, config: DeploymentConfig) -> Backend:
    """The backend for a deployment's kind."""
    if config.backend == "openai":
        from aigrid.grid.backends.openai_upstream import OpenAIUpstream

        return OpenAIUpstream(name, config)
    from aigrid.grid.backends.embedded import EmbeddedBackend

    return EmbeddedBackend(name, config)


def build_routes(models: list[ModelConfig], config: ServerConfig) -> list[Route]:
    """One route per model, each deployment named uniquely."""
    routes: list[Route] = []
    used: set[str] = set()
    for model in models:
        route = Route(model)
        for index, dep in enumerate(model.deployments):
            name = dep.name or f"{model.name}/{dep.upstream_model or dep.backend}"
            if name in used:
                name = f"{name}#{index}"
            used.add(name)
            route.deployments.append(Deployment(build_backend(name, dep), CircuitBreaker(config.breaker)))
        routes.append(route)
    return routes
