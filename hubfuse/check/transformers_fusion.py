"""transformers' fusion internals, for every fusion API generation: the one module that knows them.

Nothing else in hubfuse imports `transformers.fusion_mapping` or calls a fusion spec's methods.
Each generation is found by feature, never by comparing version strings:

- none: no `transformers.fusion_mapping` (before 5.6): `fusion_config` is an unknown config key.
- `global-registration` (5.6-5.24): `register_fusion_patches` patches classes and registers weight
  converters process-wide (sticky: later loads in the process stay fused);
  `ModuleFusionSpec.make_transforms(config)`.
- `init-context` (5.25 on): `get_fusion_patch_mapping` is applied while one model is built, nothing
  outlives the load; `make_transforms(module)` reads the fused module; `spec.is_fused(module)`.

Standalone on purpose (standard library, torch and transformers only): `downstream_probe.py` runs
inside other releases' environments, where hubfuse cannot be imported, and loads this very file by
its path. Importing it never fuses anything. It also holds the one speed-up that both hubfuse's
workers and the probes run, `use_linear_lazy_module_dir` (exact where it applies, else left out).
"""

from __future__ import annotations

import inspect
import os
import re
from importlib import metadata
from types import CodeType, ModuleType
from typing import Any

FUSION_MODULE = "transformers.fusion_mapping"
GLOBAL_REGISTRATION = "global-registration"
INIT_CONTEXT = "init-context"
NO_FUSION = "none"
# transformers' own truthy values for an environment switch (utils.import_utils.ENV_VARS_TRUE_VALUES).
_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}
HUB_KERNELS_VAR = "USE_HUB_KERNELS"


def fusion_module() -> ModuleType | None:
    try:
        import transformers.fusion_mapping as module
    except ImportError:
        return None
    return module


def generation() -> str:
    module = fusion_module()
    if module is None:
        return NO_FUSION
    if hasattr(module, "register_fusion_patches"):
        return GLOBAL_REGISTRATION
    if hasattr(module, "get_fusion_patch_mapping"):
        return INIT_CONTEXT
    raise RuntimeError(
        f"{FUSION_MODULE} has neither register_fusion_patches nor get_fusion_patch_mapping: "
        "a fusion API hubfuse does not know yet"
    )


def registration_is_sticky() -> bool:
    """True where a fused load changes every later load in the same process."""
    return generation() == GLOBAL_REGISTRATION


def registry() -> dict[str, Any]:
    """transformers' fusion families (name -> spec); the live dict, so a plugin can add to it."""
    module = fusion_module()
    return module._FUSION_REGISTRY if module is not None else {}


def family_names() -> list[str]:
    return sorted(registry())


def spec(family: str) -> Any:
    return registry()[family]


def patch_embeddings_spec_class() -> type | None:
    module = fusion_module()
    return getattr(module, "PatchEmbeddingsFusionSpec", None) if module is not None else None


def target_pattern(family: str) -> re.Pattern[str] | None:
    """The family's module-name pattern (None: every module is a candidate)."""
    patterns = spec(family).target_modules_patterns
    return re.compile("|".join(patterns)) if patterns else None


def fusable_modules(model: Any, family: str) -> dict[str, str]:
    """Path -> class name of the modules the family would fuse in an unfused model."""
    spec_object, pattern = spec(family), target_pattern(family)
    return {
        name: type(module).__name__
        for name, module in model.named_modules()
        if (pattern is None or pattern.search(name) is not None) and spec_object.is_fusable(module)
    }


def _overrides(spec_object: Any, method: str) -> bool:
    module = fusion_module()
    base = getattr(module, "ModuleFusionSpec", None)
    own = getattr(type(spec_object), method, None)
    return own is not None and (base is None or own is not getattr(base, method, None))


def is_fused(module: Any) -> bool:
    """Whether `module` is a fused runtime module built by any registered family."""
    for spec_object in registry().values():
        if _overrides(spec_object, "is_fused"):
            if spec_object.is_fused(module):
                return True
        elif type(module).__module__ == FUSION_MODULE:
            return True
    return False


def fused_modules(model: Any) -> dict[str, str]:
    """Path -> class name of every fused module of a loaded model."""
    return {name: type(module).__name__ for name, module in model.named_modules() if is_fused(module)}


def _transforms_take_module(spec_object: Any) -> bool:
    parameters = list(inspect.signature(spec_object.make_transforms).parameters)
    return bool(parameters) and parameters[0] == "module"


def transforms_error(family: str, cls: Any, config: Any) -> str | None:
    """Why transformers cannot build the family's weight conversion for this model (None: it can).

    Global registration builds the transforms from the config, at registration (a config that lacks
    what they read fails every fused load). The init-context generation builds them from each fused
    module: the model is built on the meta device with the family's patches applied, as a fused
    load builds it, nothing registered.
    """
    spec_object = spec(family)
    try:
        if not _transforms_take_module(spec_object):
            spec_object.make_transforms(config)
            return None
        import torch
        from transformers.monkey_patching import apply_patches

        module = fusion_module()
        mapping = module.get_fusion_patch_mapping(cls, config, {family: True})
        with torch.device("meta"), apply_patches(mapping):
            fused = cls(config)
        for submodule in fused.modules():
            if spec_object.is_fused(submodule):
                spec_object.make_transforms(submodule)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# -- how a user of this release loads by default ------------------------------------------------


def hub_kernels_requirement() -> str | None:
    """The `kernels` requirement transformers declares as required (None: it does not require it).

    A release that requires `kernels` loads with hub kernels on by default (`use_kernels=None`
    means on unless `USE_HUB_KERNELS` is false), and every `from_pretrained` needs the package.
    """
    try:
        requirements = metadata.requires("transformers") or []
    except metadata.PackageNotFoundError:
        return None
    for text in requirements:
        name = re.split(r"[\s<>=!~;\[(]", text, maxsplit=1)[0]
        if name.lower() == "kernels" and "extra ==" not in text:
            return text.split(";")[0].strip()
    return None


def meta_load_kwargs() -> dict[str, bool]:
    """What a load onto the meta device (targeted mode's structural loads) passes besides a user's.

    Hub kernels swap layer forwards on a real device and refuse the meta device outright
    (`kernelize`: "Unsupported device type 'meta'"); they change no key, shape or module that a
    structural load reads, so those loads go without them. Real loads keep the release's default.
    """
    return {"use_kernels": False} if hub_kernels_requirement() is not None else {}


def hub_kernels_enabled() -> bool:
    return os.environ.get(HUB_KERNELS_VAR, "YES").upper() in _TRUE_VALUES


def default_load_problem() -> str | None:
    """One line when this environment lacks what the release's default load needs (None: fine).

    Not a verdict on any model: the release cannot load anything as its users run it here.
    """
    requirement = hub_kernels_requirement()
    if requirement is None or not hub_kernels_enabled():
        return None
    from packaging.requirements import Requirement

    wanted = Requirement(requirement)
    try:
        installed = metadata.version(wanted.name)
    except metadata.PackageNotFoundError:
        installed = None
    if installed is not None and wanted.specifier.contains(installed, prereleases=True):
        return None
    import transformers

    have = f"kernels {installed} is installed" if installed else "kernels is not installed"
    return (
        f"transformers {transformers.__version__} loads every model with hub kernels on by default "
        f"and requires {requirement}, but {have}: install it (pip install '{requirement}'), "
        f"or set {HUB_KERNELS_VAR}=0 to load without hub kernels"
    )


# -- what a fused load spends outside the load ----------------------------------------------------

# transformers' `_LazyModule.__dir__` as every release from 5.5 to 5.25 has it (comments aside).
# Every fused load runs `monkey_patching.apply_patches`, which calls `dir()` on each loaded
# transformers module; this list-membership loop costs ~2 s per fused load, more than the load.
_QUADRATIC_LAZY_DIR = """
class _LazyModule(ModuleType):
    def __dir__(self):
        result = list(super().__dir__())
        for attr in self.__all__:
            if attr not in result:
                result.append(attr)
        return result
"""
LAZY_DIR_LINEAR = "linear"
LAZY_DIR_OWN = "transformers' own"


def _linear_lazy_module_dir(self: ModuleType) -> list[str]:
    """The quadratic original's result, element for element and in order, in linear time."""
    result = list(ModuleType.__dir__(self))
    seen = set(result)
    for attr in self.__all__:
        if attr not in seen:
            result.append(attr)
            seen.add(attr)
    return result


def _code_identity(code: CodeType) -> tuple[Any, ...]:
    return (code.co_code, code.co_consts, code.co_names, code.co_varnames, code.co_freevars, code.co_argcount)


def use_linear_lazy_module_dir() -> str:
    """Swap in `_linear_lazy_module_dir` where this release's `__dir__` is exactly the known one.

    Exact by construction: the original is compared by bytecode (compiled here, by this very
    interpreter) and its class must derive from ModuleType directly, so `dir()` returns the same
    list and nothing that reads it can tell. Anything else is left as it is. Returns which
    `__dir__` the process now runs (LAZY_DIR_LINEAR or LAZY_DIR_OWN, with why).
    """
    from transformers.utils import import_utils

    cls = getattr(import_utils, "_LazyModule", None)
    current = getattr(getattr(cls, "__dir__", None), "__code__", None)
    if current is _linear_lazy_module_dir.__code__:
        return LAZY_DIR_LINEAR
    if not isinstance(cls, type) or cls.__mro__[1:2] != (ModuleType,) or not isinstance(current, CodeType):
        return f"{LAZY_DIR_OWN} (_LazyModule is not the known ModuleType subclass)"
    namespace: dict[str, Any] = {"ModuleType": ModuleType}
    exec(compile(_QUADRATIC_LAZY_DIR, "<known _LazyModule>", "exec", dont_inherit=True), namespace)
    if _code_identity(current) != _code_identity(namespace["_LazyModule"].__dir__.__code__):
        return f"{LAZY_DIR_OWN} (its __dir__ differs from the known one)"
    cls.__dir__ = _linear_lazy_module_dir  # type: ignore[method-assign]
    return LAZY_DIR_LINEAR
