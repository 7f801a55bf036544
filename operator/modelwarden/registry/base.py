"""The seam between the operator and a model registry: resolve a moving URI to a concrete one."""

from __future__ import annotations

from typing import Any, Protocol

from modelwarden.contract.modeluri import ModelUri, Resolution


class RegistryError(RuntimeError):
    """A resolution that failed. The message is one line naming the model, version or alias and
    the reason (never a credential): it goes into a ModelDeployment condition and an event."""


class RegistryUnavailable(RegistryError):
    """The registry could not be asked (unreachable, timed out, 429/5xx): ask again later."""


class ModelRegistry(Protocol):
    def resolve(self, uri: ModelUri) -> Resolution:
        """What `uri` names now: an alias or stage pinned to `models:/NAME/N`, a concrete version
        or run checked to exist. Raises RegistryError."""
        ...

    def tagged_versions(self, tag: str, value: str) -> list[dict[str, Any]]:
        """The model versions carrying tag=value (as the registry's API answers them). Raises
        RegistryError, RegistryUnavailable when it is worth asking again."""
        ...
