"""gentwin environments: one batched kernel per family, registered with Gymnasium.

Every id is registered with an ``entry_point`` (single env, B = 1) and a
``vector_entry_point`` (the native batched ``VectorEnv`` of the same kernel), so
``gym.make_vec(id, num_envs=B)`` never falls back to a Python loop of envs.

The PettingZoo environments are created with :func:`make_parallel` or, in
PettingZoo's module convention, with ``parallel_env(**kwargs)`` / ``env(**kwargs)``
(AEC) of :mod:`gentwin.envs.model_caching_ma_v0` and
:mod:`gentwin.envs.task_offloading_ma_v0`.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from gentwin.envs.core import (
    BatchedKernel,
    InvalidActionError,
    KernelEnv,
    KernelParallelEnv,
    KernelSB3VecEnv,
    KernelVectorEnv,
    make_sb3_vec_env,
)

#: (id, module, single-env class, vector-env class, default kwargs)
ENVIRONMENTS: list[tuple[str, str, str, str, dict]] = [
    ("gentwin/AspSelection-v0", "gentwin.envs.asp_selection", "AspSelectionEnv", "AspSelectionVectorEnv", {}),
    ("gentwin/PowerAllocation-v0", "gentwin.envs.power_allocation", "PowerAllocationEnv", "PowerAllocationVectorEnv", {}),
    ("gentwin/ContractDesign-v0", "gentwin.envs.contract_design", "ContractDesignEnv", "ContractDesignVectorEnv", {}),
    ("gentwin/ContractDesign-Dynamic-v0", "gentwin.envs.contract_design", "ContractDesignEnv", "ContractDesignVectorEnv", {"params": "dynamic"}),
    ("gentwin/ModelCaching-v0", "gentwin.envs.model_caching", "ModelCachingEnv", "ModelCachingVectorEnv", {}),
    ("gentwin/TaskOffloading-v0", "gentwin.envs.task_offloading", "TaskOffloadingEnv", "TaskOffloadingVectorEnv", {}),
    ("gentwin/RisIsac-v0", "gentwin.envs.ris_isac", "RisIsacEnv", "RisIsacVectorEnv", {}),
    ("gentwin/HdtStreaming-v0", "gentwin.envs.hdt_streaming", "HdtStreamingEnv", "HdtStreamingVectorEnv", {}),
    ("gentwin/HdtStreaming-Dynamic-v0", "gentwin.envs.hdt_streaming", "HdtStreamingEnv", "HdtStreamingVectorEnv", {"params": "dynamic"}),
]

#: PettingZoo environments: id -> "module:ParallelEnvClass" (see gentwin.envs.make_parallel).
PARALLEL_ENVIRONMENTS: dict[str, str] = {
    "gentwin/ModelCaching-ma-v0": "gentwin.envs.model_caching:ModelCachingParallelEnv",
    "gentwin/TaskOffloading-ma-v0": "gentwin.envs.task_offloading:TaskOffloadingParallelEnv",
}


def register_all() -> None:
    """Register every gentwin id with Gymnasium (idempotent)."""
    for env_id, module, single, vector, kwargs in ENVIRONMENTS:
        if env_id in registry:
            continue
        register(
            id=env_id,
            entry_point=f"{module}:{single}",
            vector_entry_point=f"{module}:{vector}",
            kwargs=dict(kwargs),
        )


def make_parallel(env_id: str, **kwargs):
    """Create the PettingZoo ``ParallelEnv`` registered under ``env_id``."""
    import importlib

    if env_id not in PARALLEL_ENVIRONMENTS:
        raise ValueError(
            f"env_id = {env_id!r} is not a gentwin PettingZoo environment: "
            f"allowed are {sorted(PARALLEL_ENVIRONMENTS)}"
        )
    module, cls = PARALLEL_ENVIRONMENTS[env_id].split(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)


__all__ = [
    "BatchedKernel",
    "ENVIRONMENTS",
    "InvalidActionError",
    "KernelEnv",
    "KernelParallelEnv",
    "KernelSB3VecEnv",
    "KernelVectorEnv",
    "PARALLEL_ENVIRONMENTS",
    "make_parallel",
    "make_sb3_vec_env",
    "register_all",
]
