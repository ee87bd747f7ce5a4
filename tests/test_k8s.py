"""rift_dagster.k8s without a cluster: definitions load with the k8s Pipes client and executor, and the pod
a step would start (built by dagster-k8s's own `build_pod_body`) requests the GPUs. Only
`PipesK8sClient.run` (the call that would talk to the cluster) is replaced, to capture its arguments."""
import inspect

import dagster as dg
import pytest

pytest.importorskip("dagster_k8s")
from dagster_k8s import PipesK8sClient  # noqa: E402
from dagster_k8s.pipes import build_pod_body  # noqa: E402

from rift_dagster.definitions import defs as load_defs  # noqa: E402
from rift_dagster.defs.resources import RunProfile, rift_resources, run_step  # noqa: E402
from rift_dagster.k8s import RiftK8sPipesClient, k8s_overrides  # noqa: E402

LAUNCHER = ["accelerate", "launch", "--config_file", "rift_core/configs/accelerate/ddp.yaml"]


@dg.asset
def trained(context: dg.AssetExecutionContext, rift: RunProfile, pipes_client: dg.ResourceParam[dg.PipesClient]):
    """The training asset reduced to its out-of-process step (the same run_step call)."""
    metadata, _ = run_step(context, rift, pipes_client, "train",
                           {"config": {"method": "rift", "output_dir": "/data/tiny/checkpoints/rift"}}, distributed=True)
    return dg.MaterializeResult(metadata=metadata)


def overrides():
    return k8s_overrides(image="registry.example.com/rift:test", gpus=1, train_gpus=4, namespace="rift",
                         data_pvc="rift-data", executor_config={"max_concurrent": 2})


def test_the_projects_definitions_load_with_the_k8s_pipes_client_and_the_k8s_executor():
    ov = overrides()
    project = load_defs()
    defs = dg.Definitions(assets=project.assets, asset_checks=project.asset_checks, jobs=project.jobs,
                          schedules=project.schedules, resources={**rift_resources(), **ov["resources"]},
                          executor=ov["executor"])
    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.executor_def.name == "k8s"
    assert isinstance(job.resource_defs["pipes_client"], dg.ResourceDefinition)
    assert isinstance(defs.resources["pipes_client"], RiftK8sPipesClient)
    assert defs.resources["storage"].data_dir == "/data"
    # the configured executor's config (job_image, volumes, ...) is valid for dagster-k8s's schema
    execution = dg.validate_run_config(job, {})["execution"]["k8s"]
    assert execution["job_image"] == "registry.example.com/rift:test" and execution["job_namespace"] == "rift"
    assert execution["volume_mounts"] == [{"name": "rift-data", "mount_path": "/data"}]
    assert execution["max_concurrent"] == 2


@pytest.fixture
def captured(monkeypatch):
    """Replace the cluster call with one that records its arguments and reports one materialization."""
    calls = []
    real_run = PipesK8sClient.run

    def fake_run(self, **kwargs):
        inspect.signature(real_run).bind(self, **kwargs)  # the real method accepts exactly these arguments
        calls.append(kwargs)

        class Done:
            def get_results(self):
                return (dg.MaterializeResult(metadata={"pod": "captured"}),)

        return Done()

    monkeypatch.setattr(PipesK8sClient, "run", fake_run)
    return calls


def pod_of(call: dict):
    """The V1Pod dagster-k8s would create for a captured call."""
    return build_pod_body(pod_name="rift-step", image=call["image"], command=call["command"], env_vars={},
                          base_pod_meta=None, base_pod_spec=call["base_pod_spec"])


def test_a_training_step_becomes_a_pod_that_requests_the_gpus(captured):
    result = dg.materialize([trained], resources={"rift": RunProfile(), **overrides()["resources"]})
    assert result.success
    [call] = captured
    assert isinstance(call["context"], dg.AssetExecutionContext)
    assert call["extras"]["step"] == "train" and call["namespace"] == "rift"
    assert call["image"] == "registry.example.com/rift:test"
    assert call["command"] == ["python", "-m", "rift_dagster.worker"]  # the image's interpreter
    spec = call["base_pod_spec"]
    assert spec["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "4"}

    pod = pod_of(call)
    container = pod.spec.containers[0]
    assert container.resources.limits == {"nvidia.com/gpu": "4"}
    assert container.image == "registry.example.com/rift:test" and pod.spec.restart_policy == "Never"
    mounts = {m.mount_path: m.name for m in container.volume_mounts}
    assert mounts == {"/data": "rift-data", "/dev/shm": "dshm"}  # shared data; NCCL's shared memory
    claims = [v.persistent_volume_claim.claim_name for v in pod.spec.volumes if v.persistent_volume_claim]
    assert claims == ["rift-data"]


def test_gpus_per_step_and_the_launcher_prefix():
    client = RiftK8sPipesClient(image="rift:test", gpus_per_step=2,
                                base_pod_spec={"nodeSelector": {"pool": "gpu"}, "containers": [{"name": "rift"}]})
    for step in ("generate", "evaluate", "train"):
        assert client.pod_spec(step)["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    cpu = client.pod_spec("label")  # a step outside train/generate/evaluate gets no GPU
    assert "resources" not in cpu["containers"][0] and "volumes" not in cpu
    assert cpu["node_selector"] == {"pool": "gpu"} and cpu["containers"][0]["name"] == "rift"
    assert client.base_pod_spec == {"nodeSelector": {"pool": "gpu"}, "containers": [{"name": "rift"}]}  # untouched

    assert client.container_command([*LAUNCHER, "-m", "rift_dagster.worker"]) == [*LAUNCHER, "-m", "rift_dagster.worker"]
    assert client.container_command(["/usr/local/bin/python3.12", "-m", "rift_dagster.worker"])[0] == "python"
    one_gpu = RiftK8sPipesClient(image="rift:test").pod_spec("train")
    assert "volumes" not in one_gpu  # /dev/shm only for several GPUs
    pod = build_pod_body(pod_name="p", image="rift:test", command=["python"], env_vars={}, base_pod_meta=None,
                         base_pod_spec=client.pod_spec("train", cwd="/app"))
    assert pod.spec.node_selector == {"pool": "gpu"} and pod.spec.containers[0].working_dir == "/app"
