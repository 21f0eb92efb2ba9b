"""The resource types the emulated API server serves: kmock's bundled discovery
information for the built-in kinds, plus what each applied CRD registers."""

from __future__ import annotations

import dataclasses
import re
import warnings
from typing import Any

import kmock

from kubenas.testing.contract import ApiError

_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    singular: str
    namespaced: bool
    verbs: tuple[str, ...]
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    schema: dict[str, Any] | None = None  # a custom resource version's openAPIV3Schema
    printer_columns: tuple[dict[str, Any], ...] = ()  # a CRD version's additionalPrinterColumns
    crd: str | None = None  # the name of the CRD that registered it

    @property
    def key(self) -> str:
        return f"{self.group}/{self.version}/{self.plural}" if self.group else f"{self.version}/{self.plural}"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def storage(self) -> tuple[str, str]:
        """Where objects live: one store per group and plural, whatever the version."""
        return (self.group, self.plural)

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    @property
    def group_resource(self) -> str:
        """As error messages name it: `jobs.batch`, `configmaps`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def group_kind(self) -> str:
        """As validation messages name it: `Job.batch`, `ConfigMap`."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def describe(self, name: str) -> dict[str, str]:
        """The `details` of a Status about one object of this type (the real server names the plural)."""
        return {"name": name, "kind": self.plural} | ({"group": self.group} if self.group else {})

    def not_found(self, name: str) -> ApiError:
        return ApiError(404, "NotFound", f'{self.group_resource} "{name}" not found', details=self.describe(name))


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Sort key putting the version Kubernetes prefers first: v2 > v1 > v1beta2 > v1beta1 > v1alpha1 > others."""
    match = _VERSION.match(version)
    if match is None:
        return (3, 0, 0, version)
    major, stage, minor = match.groups()
    return ({None: 0, "beta": 1, "alpha": 2}[stage], -int(major), -int(minor or 0), version)


class Registry:
    def __init__(self) -> None:
        self.discovery = kmock.ResourcesArray()  # what kmock's scaffold serves at /, kept in step
        with warnings.catch_warnings():  # kmock 0.8 reads its bundle with a deprecated importlib call
            warnings.simplefilter("ignore", DeprecationWarning)
            self.discovery.load_bundled()
        self._types: dict[str, ResourceType] = {}
        self.revision = 0  # bumped on every change, for documents built from the registry to cache on
        for resource, info in self.discovery.items():
            self._types[_key(resource.group, resource.version, resource.plural)] = ResourceType(
                group=resource.group,
                version=resource.version,
                plural=resource.plural,
                kind=info.kind,
                singular=info.singular or info.kind.lower(),
                namespaced=bool(info.namespaced),
                verbs=tuple(sorted(info.verbs)),
                short_names=tuple(sorted(info.shortnames)),
                categories=tuple(sorted(info.categories)),
                subresources=tuple(sorted(info.subresources)),
            )

    def get(self, key: str) -> ResourceType:
        try:
            return self._types[key]
        except KeyError:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({key})") from None

    def find(self, *, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get(_key(group, version, plural))

    def all(self) -> list[ResourceType]:
        return list(self._types.values())

    def versions(self, group: str) -> list[str]:
        """The group's served versions, the preferred first."""
        found = {rt.version for rt in self._types.values() if rt.group == group}
        return sorted(found, key=version_priority)

    def for_storage(self, storage: tuple[str, str]) -> ResourceType | None:
        """The preferred version's type of the objects kept under `storage`."""
        candidates = [rt for rt in self._types.values() if rt.storage == storage]
        return min(candidates, key=lambda rt: version_priority(rt.version), default=None)

    def groups(self) -> list[str]:
        return sorted({rt.group for rt in self._types.values() if rt.group})

    def add(self, resource_type: ResourceType) -> None:
        self._types[resource_type.key] = resource_type
        self.revision += 1
        self.discovery[kmock.resource(resource_type.group, resource_type.version, resource_type.plural)] = (
            kmock.ResourceInfo(
                namespaced=resource_type.namespaced,
                kind=resource_type.kind,
                singular=resource_type.singular,
                verbs=set(resource_type.verbs),
                shortnames=set(resource_type.short_names),
                categories=set(resource_type.categories),
                subresources=set(resource_type.subresources),
            )
        )

    def remove(self, key: str) -> None:
        resource_type = self._types.pop(key)
        self.revision += 1
        del self.discovery[kmock.resource(resource_type.group, resource_type.version, resource_type.plural)]

    def registered_by(self, crd: str) -> list[ResourceType]:
        return [rt for rt in self._types.values() if rt.crd == crd]


def _key(group: str, version: str, plural: str) -> str:
    return f"{group}/{version}/{plural}" if group else f"{version}/{plural}"
