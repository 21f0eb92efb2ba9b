"""Cluster-wide defaults for children's pods (`kubenas operator --trainer-defaults FILE`).

The Helm chart and the raw manifests mount them from a ConfigMap, so a search's
`trial.template` may leave out what every child on this cluster shares: the trainer
image, one GPU, the GPU nodes' tolerations, a restricted security context. A default
fills only what the template leaves unset; a search's own value always wins.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class TrainerDefaultsError(ValueError):
    """The defaults file cannot be read; the message names the file and field."""


class TrainerDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    image: str | None = Field(None, description="Trainer container image, when the template names none.")
    image_pull_policy: str | None = Field(None, alias="imagePullPolicy", description="Its pull policy, when unset.")
    resources: dict[str, Any] = Field(default_factory=dict, description="Trainer resources, when it sets none.")
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector",
                                          description="Pod nodeSelector, when it sets none.")
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="Pod tolerations, when it sets none.")
    pod_security_context: dict[str, Any] = Field(default_factory=dict, alias="podSecurityContext",
                                                 description="Pod securityContext, when it sets none.")
    security_context: dict[str, Any] = Field(default_factory=dict, alias="securityContext",
                                             description="Trainer container securityContext, when it sets none.")
    queue_name: str | None = Field(None, alias="queueName",
                                   description="Kueue LocalQueue of children whose search names none "
                                               "(spec.trial.queueName or the template's queue-name label).")

    @classmethod
    def load(cls, path: Path | str) -> TrainerDefaults:
        try:
            document = yaml.safe_load(Path(path).read_text()) or {}
            return cls.model_validate(document)
        except (OSError, yaml.YAMLError) as error:
            raise TrainerDefaultsError(f"{path}: {error}") from None
        except ValidationError as error:
            where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            raise TrainerDefaultsError(f"{path}: {where}") from None

    def apply(self, template: dict) -> dict:
        """A copy of a pod template (a dict, as in the API) with the defaults filled in."""
        template = copy.deepcopy(template)
        pod = template.setdefault("spec", {})
        for key, value in (("nodeSelector", self.node_selector), ("tolerations", self.tolerations),
                           ("securityContext", self.pod_security_context)):
            if value and not pod.get(key):
                pod[key] = copy.deepcopy(value)
        containers = pod.get("containers") or []
        if containers:
            trainer = containers[0]
            for key, value in (("image", self.image), ("imagePullPolicy", self.image_pull_policy),
                               ("resources", self.resources), ("securityContext", self.security_context)):
                if value and not trainer.get(key):
                    trainer[key] = copy.deepcopy(value)
        return template
