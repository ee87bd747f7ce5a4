"""Kubernetes, for pipelines that outgrow one machine: each Dagster step runs in its own pod
(`dagster_k8s.k8s_job_executor`), and each out-of-process step (train / generate / evaluate) starts its
Dagster Pipes child in a further pod that requests GPUs (`RiftK8sPipesClient`, in place of
`dg.PipesSubprocessClient` as the `pipes_client` resource).

    from rift_dagster.k8s import k8s_overrides
    k8s = k8s_overrides(image="registry.example.com/rift:1", gpus=1, train_gpus=8, data_pvc="rift-data")
    defs = dg.Definitions(..., resources={**resources, **k8s["resources"]}, executor=k8s["executor"])

Needs the `k8s` extra (dagster-k8s) and an image with this repository installed, its root the working
directory (the launcher's `--config_file rift_core/configs/accelerate/...` paths are relative to it). See
docs/SCALING.md.
"""
import copy
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import kubernetes.client
from dagster_k8s import PipesK8sClient, k8s_job_executor
from dagster_k8s.models import k8s_snake_case_dict

from rift_dagster.defs.resources import RiftStorage

GPU_STEPS = frozenset({"train", "generate", "evaluate"})  # extras["step"] values whose pod gets GPUs
GPU_RESOURCE = "nvidia.com/gpu"


class RiftK8sPipesClient(PipesK8sClient):
    """`PipesK8sClient` that takes the same call as the `PipesSubprocessClient` it replaces:
    `run(command=[python, "-m", "rift_dagster.worker"], context=..., extras={"step": ...})`.

    image          the container image (this repository installed, its root the working directory)
    namespace      where the pods go (None: the current namespace, or "default")
    gpus_per_step  `nvidia.com/gpu` limit of the pod of a train / generate / evaluate step
    train_gpus     the limit of a train step's pod (None: gpus_per_step); match the launcher's --num_processes
    python         the image's interpreter, which replaces the local one at the head of the command
    base_pod_spec  raw PodSpec (snake_case or camelCase) under what is added: volumes, node selectors, ...
    Other keyword arguments go to `PipesK8sClient` (env, kubeconfig_file, load_incluster_config, ...).
    """

    def __init__(self, image: str, namespace: str | None = None, gpus_per_step: int = 1,
                 train_gpus: int | None = None, python: str = "python",
                 base_pod_spec: Mapping[str, Any] | None = None, **client_kwargs):
        super().__init__(**client_kwargs)
        self.image = image
        self.namespace = namespace
        self.gpus_per_step = gpus_per_step
        self.train_gpus = train_gpus
        self.python = python
        self.base_pod_spec = dict(base_pod_spec or {})

    def gpus(self, step: str | None) -> int:
        if step not in GPU_STEPS:
            return 0
        return self.train_gpus if step == "train" and self.train_gpus is not None else self.gpus_per_step

    def container_command(self, command: Sequence[str]) -> list[str]:
        """The local interpreter (sys.executable, or any `python*`) becomes the image's; a launcher such as
        `accelerate launch ...` stays as it is."""
        cmd = [str(c) for c in command]
        if cmd and (cmd[0] == sys.executable or Path(cmd[0]).name.startswith("python")):
            cmd[0] = self.python
        return cmd

    def pod_spec(self, step: str | None, cwd: str | None = None) -> dict:
        """The PodSpec (snake_case dict) for one step: base_pod_spec plus its GPU limit, and a RAM-backed
        /dev/shm when it uses several GPUs (NCCL needs more than the 64 MiB default)."""
        spec = dict(k8s_snake_case_dict(kubernetes.client.V1PodSpec, copy.deepcopy(self.base_pod_spec)))
        containers = spec.setdefault("containers", [{}])
        container = containers[0]
        if cwd:
            container["working_dir"] = str(cwd)
        n = self.gpus(step)
        if n:
            resources = container.setdefault("resources", {})
            resources.setdefault("limits", {})[GPU_RESOURCE] = str(n)
        if n > 1:
            spec.setdefault("volumes", []).append({"name": "dshm", "empty_dir": {"medium": "Memory"}})
            container.setdefault("volume_mounts", []).append({"name": "dshm", "mount_path": "/dev/shm"})
        return spec

    def run(self, *, command: Sequence[str], context, extras: Mapping[str, Any] | None = None,
            cwd: str | None = None, **kwargs):
        extras = dict(extras or {})
        kwargs.setdefault("namespace", self.namespace)
        return super().run(
            context=context, image=self.image, command=self.container_command(command),
            base_pod_spec=self.pod_spec(extras.get("step"), cwd), extras=extras, **kwargs,
        )


def k8s_overrides(image: str, gpus: int = 1, train_gpus: int | None = None, namespace: str | None = None,
                  data_pvc: str | None = None, data_dir: str = "/data",
                  executor_config: Mapping[str, Any] | None = None, **client_kwargs) -> dict:
    """What a user swaps in to run on Kubernetes: {"resources": {"pipes_client", and "storage" when
    data_pvc is set}, "executor": k8s_job_executor configured}.

    Steps hand each other files by path, so every pod must see the same data folder: `data_pvc` (a
    ReadWriteMany PersistentVolumeClaim) is mounted at `data_dir` in the step pods and the Pipes pods, and
    `storage.data_dir` points there. `executor_config` is merged into the executor's config (e.g.
    max_concurrent, env_secrets, service_account_name); other keyword arguments go to RiftK8sPipesClient.
    """
    volumes, mounts = [], []
    if data_pvc:
        volumes = [{"name": "rift-data", "persistentVolumeClaim": {"claimName": data_pvc}}]
        mounts = [{"name": "rift-data", "mount_path": data_dir}]
    pod_spec = dict(client_kwargs.pop("base_pod_spec", None) or {})
    if data_pvc:
        pod_spec = dict(k8s_snake_case_dict(kubernetes.client.V1PodSpec, copy.deepcopy(pod_spec)))
        pod_spec["volumes"] = [*pod_spec.get("volumes", []),
                               {"name": "rift-data", "persistent_volume_claim": {"claim_name": data_pvc}}]
        containers = pod_spec.setdefault("containers", [])
        if not containers:
            containers.append({})
        containers[0]["volume_mounts"] = [*containers[0].get("volume_mounts", []), *mounts]
    client = RiftK8sPipesClient(image=image, namespace=namespace, gpus_per_step=gpus, train_gpus=train_gpus,
                                base_pod_spec=pod_spec, **client_kwargs)
    config: dict[str, Any] = {"job_image": image}
    if namespace:
        config["job_namespace"] = namespace
    if data_pvc:
        config.update(volumes=volumes, volume_mounts=mounts)
    config.update(executor_config or {})
    resources: dict[str, Any] = {"pipes_client": client}
    if data_pvc:
        resources["storage"] = RiftStorage(data_dir=data_dir)
    return {"resources": resources, "executor": k8s_job_executor.configured(config)}
