"""The downstream matrix: the config-only load on other transformers releases, and its gate.

A `fusion_config` merged into a repo's config.json reaches every user, whatever transformers they
run. For each release of the plan and each environment column (`base`: nothing optional installed;
`torchvision`: where it can be installed beside the shared torch), the probe
(`downstream_probe.py`, forked from the probe host where that is exact, else started fresh;
`probe_launch.py`) loads the checkpoint the way a user does and
gives one word per cell: safe, ignored, unsupported (the release does not know the architecture),
crash, unsafe or error. A family stays safe only when every gating cell is safe, ignored or
unsupported; an unsupported release is never part of the releases a verdict holds for.

The plan: by default the latest patch of every minor release that reads `fusion_config` plus the
newest release before those (it must ignore the key harmlessly), from the package index.
`--downstream-versions SPEC` narrows the gating releases (a PEP 440 specifier; `A || B` is a
union); the default matrix's other releases then still run, as non-gating cells, so the PR text
can say which releases outside the range break. `none` turns the matrix off.
`HUBFUSE_DOWNSTREAM_VERSIONS` replaces the default matrix (tests and the demo use a small one).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from hubfuse import settings
from hubfuse.check import env_commands, envs, envs_root, probe_launch, shared_torch, uv
from hubfuse.check.cell_case import CellCase
from hubfuse.check.cell_store import MatrixCells
from hubfuse.check.matrix_progress import MatrixProgress
from hubfuse.check.releases import transformers_releases
from hubfuse.check.verdict import (
    OUTPUT_TOLERANCE,
    PASSING_OUTCOMES,
    DownstreamCell,
    FamilyResult,
    version_range,
)
from hubfuse.errors import BadInputError
from hubfuse.log import log
from hubfuse.machine import cores, loads_that_fit

# transformers/fusion_mapping.py exists from this release on; earlier ones ignore the key.
FIRST_FUSION_RELEASE = Version("5.6.0")
DEFAULT_ENV_VAR = str(settings.DOWNSTREAM_DEFAULT.env)
NONE = "none"
# Environments built at once, each taking about this much memory (uv, then the torch check).
ENV_BUILD_JOBS = 4
ENV_BUILD_BYTES = 600_000_000


@dataclass(frozen=True)
class DownstreamPlan:
    """The releases a verdict covers: `gating` decide it, `outside` are reported beside it."""

    selection: str  # "default", the user's specifier, or "none"
    gating: tuple[str, ...] = ()
    outside: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.gating or self.outside)

    @property
    def versions(self) -> tuple[str, ...]:
        return tuple(sorted({*self.gating, *self.outside}, key=Version))

    def key(self) -> dict[str, Any]:
        """For verdict caches and ledgers: a new release in the index changes it."""
        return {
            "selection": self.selection,
            "gating": list(self.gating),
            "outside": list(self.outside),
            "torch": envs_root.installed_torch() if self.enabled else None,
        }

    def describe(self) -> str:
        if not self.enabled:
            return "off: the verdict holds for the installed transformers only"
        text = f"{self.selection}: transformers {', '.join(self.gating) or '-'}"
        if self.outside:
            text += f" (also reported, not gating: {', '.join(self.outside)})"
        return text


def matrix_digest(plan: DownstreamPlan) -> str:
    """A short stable name for the plan (ledger records compare it)."""
    return hashlib.sha256(json.dumps(plan.key(), sort_keys=True).encode()).hexdigest()[:16]


def parse_spec(text: str) -> list[SpecifierSet]:
    """`>=5.21`, `==5.5.4 || ==5.24.0`; a bare version means exactly it."""
    sets = []
    for part in text.split("||"):
        part = part.strip()
        if part and part[0].isdigit():
            part = f"=={part}"
        try:
            sets.append(SpecifierSet(part))
        except InvalidSpecifier:
            raise BadInputError(
                f"--downstream-versions {text!r}: {part!r} is not a PEP 440 specifier (e.g. '>=5.21', 'none')"
            ) from None
    return sets


def latest_patches(versions: list[Version]) -> list[Version]:
    """The newest release of each minor version, oldest first."""
    ordered = sorted(versions)
    return [list(group)[-1] for _, group in groupby(ordered, key=lambda v: (v.major, v.minor))]


def default_matrix(releases: list[Version]) -> list[Version]:
    fusion_capable = latest_patches([v for v in releases if v >= FIRST_FUSION_RELEASE])
    before = [v for v in releases if v < FIRST_FUSION_RELEASE]
    return ([max(before)] if before else []) + fusion_capable


def select(releases: list[Version], spec: str) -> list[Version]:
    sets = parse_spec(spec)
    matching = [v for v in releases if any(s.contains(v) for s in sets)]
    return latest_patches(matching)


def resolve_plan(requested: str | None) -> DownstreamPlan:
    """The plan for a command: `requested` is the flag's value (None: not given)."""
    default_spec = settings.DOWNSTREAM_DEFAULT.value()
    if requested is not None and requested.strip().lower() == NONE:
        return DownstreamPlan(NONE)
    if requested is None and default_spec is not None and default_spec.lower() == NONE:
        return DownstreamPlan(NONE)
    if requested is not None:
        parse_spec(requested)  # a bad specifier is refused before the index is asked
    releases = transformers_releases()
    if default_spec is None:
        default = default_matrix(releases)
    else:
        default = [] if default_spec.lower() == NONE else select(releases, default_spec)
    if requested is None:
        return DownstreamPlan("default" if default_spec is None else default_spec, _strings(default))
    gating = select(releases, requested)
    if not gating:
        raise BadInputError(f"--downstream-versions {requested!r} matches no transformers release")
    outside = [v for v in default if v not in gating]
    return DownstreamPlan(requested.strip(), _strings(gating), _strings(outside))


def _strings(versions: list[Version]) -> tuple[str, ...]:
    return tuple(str(v) for v in sorted(versions))


# -- running the matrix --------------------------------------------------------------------------


def environment_columns() -> dict[str, str | None]:
    """Each environment column and why it is unavailable (None: available)."""
    columns: dict[str, str | None] = {}
    for name, extras in envs.ENV_EXTRAS.items():
        reasons = [r for r in (envs.extra_unavailable(e) for e in extras) if r]
        columns[name] = (
            f"cannot be installed beside torch {envs_root.installed_torch()}: {reasons[0]}"
            if reasons
            else None
        )
    return columns


@dataclass(frozen=True)
class MatrixInputs:
    source: Path  # the checkpoint as it is
    downstream: Path  # the same with fusion_config in config.json (what the PR makes)
    variant: Path | None  # the fused-layout save, when there is one


def run_matrix(
    plan: DownstreamPlan,
    inputs: MatrixInputs,
    work: Path,
    timeout: float,
    jobs: int,
    case: CellCase | None = None,
    loads: int = 1,
    launcher: probe_launch.ProbeLauncher | None = None,
) -> tuple[dict[str, str | None], list[DownstreamCell], list[DownstreamCell]]:
    """(environment columns, config-PR cells, variant cells), one probe per environment.

    `jobs` probes run at once, and `loads` scenario processes in all (each probe runs its
    scenarios `loads // probes` at a time). With a `case`, cells proven on a repo of the same case
    are reused (hubfuse/check/cell_store.py). `launcher`: one `probe_launcher` made earlier (its
    host may have started already); by default one for this run.
    """
    columns = environment_columns()
    tasks = [
        (version, column)
        for version in plan.versions
        for column, unavailable in columns.items()
        if unavailable is None
    ]
    shared = MatrixCells(case, ("config", "variant") if inputs.variant else ("config",))
    reused = {task: cells for task in tasks if (cells := shared.reused(*task)) is not None}
    to_run = [task for task in tasks if task not in reused]
    log.info(
        f"  downstream matrix: {len(tasks)} environment(s), {plan.describe()}"
        + (f"; {len(reused)} cell(s) proven on a repo of the same case" if reused else "")
    )
    progress = MatrixProgress(len(to_run), len(tasks))
    for (version, column), cells in reused.items():
        progress.cell(version, column, _outcomes(cells), 0.0, cells["config"]["proven_on"])

    def one(task: tuple[str, str]) -> list[tuple[str, dict[str, Any], bool]]:
        version, column = task
        cell_work = work / "matrix" / f"{version}-{column}"
        others = [v for v in plan.versions if v != version]
        leave_out = (
            f"--downstream-versions '>={min(others, key=Version)},!={version}'"
            if others
            else ("--downstream-versions none")
        )
        start = time.monotonic()
        results = _run_cells(
            version,
            column,
            inputs,
            cell_work,
            ProbeRun(launcher, timeout, probe_slots, scenario_jobs),
            leave_out,
            lambda built, waited: progress.environment(version, column, built, waited),
        )
        own = results[0][1]
        shared.record(version, column, own)  # `unavailable` is never shared: its stand-in reruns too
        progress.cell(version, column, _outcomes(own), time.monotonic() - start)
        return version, column, results

    # Environments build side by side (uv waits on the index and the disk more than on the CPU);
    # the probes, which hold the model, take one of `jobs` slots each.
    probe_slots = threading.BoundedSemaphore(max(1, jobs))
    scenario_jobs = max(1, loads // max(1, min(jobs, len(to_run))))
    builders = loads_that_fit(ENV_BUILD_BYTES, 1.0, ENV_BUILD_JOBS)
    with (
        contextlib.nullcontext(launcher) if launcher else probe_launcher(to_run) as launcher,
        ThreadPoolExecutor(max_workers=max(1, jobs, min(builders, len(to_run)))) as pool,
    ):
        ran = {(v, c): results for v, c, results in pool.map(one, to_run)}
    progress.finish()
    outcomes = [(v, [(c, reused[(v, c)], False)] if (v, c) in reused else ran[(v, c)]) for v, c in tasks]
    config_cells, variant_cells = [], []
    gating = set(plan.gating)
    for version, results in outcomes:
        for column, cells, stand_in in results:
            for subject, target in (("config", config_cells), ("variant", variant_cells)):
                cell = cells.get(subject)
                if cell is not None:
                    target.append(
                        DownstreamCell(
                            version,
                            column,
                            cell["outcome"],
                            cell["reason"],
                            gating=version in gating and not stand_in,
                            notes=cell.get("notes", []),
                            stand_in=stand_in,
                            proven_on=cell.get("proven_on"),
                        )
                    )
    return columns, config_cells, variant_cells


def _outcomes(cells: dict[str, Any]) -> str:
    return ", ".join(f"{subject} {cell['outcome']}" for subject, cell in cells.items())


# -- honest cells: a release whose requirement the index lacks (begin) ----------------------------
@dataclass(frozen=True)
class ProbeRun:
    """How this matrix run starts its probes."""

    launcher: probe_launch.ProbeLauncher
    timeout: float
    slots: threading.BoundedSemaphore  # probes at once
    scenario_jobs: int  # scenarios at once within a probe


def _run_cells(
    version: str,
    column: str,
    inputs: MatrixInputs,
    work: Path,
    probes: ProbeRun,
    leave_out: str,
    on_environment: Callable[[float | None, float], None] = lambda built, waited: None,
) -> list[tuple[str, dict[str, Any], bool]]:
    """[(column, cells by subject, stand_in)]: the release's own cells, and where its environment
    cannot be built as its users have it, `unavailable` (never passing) plus an honest stand-in:
    that release without the missing requirement, the feature needing it switched off, never gating.
    """
    subjects = ("config", "variant") if inputs.variant else ("config",)
    extras = envs.ENV_EXTRAS[column]
    start = time.monotonic()
    try:
        env, created = envs.ensure_env(version, extras)
    except uv.RequirementUnavailable as exc:
        missing = exc
    except env_commands.EnvError as exc:
        return [(column, _failed(subjects, f"environment: {exc}"), False)]
    else:
        on_environment(created, time.monotonic() - start)
        return [(column, _run_cell(env, inputs, work, probes), False)]
    reason = f"{missing}: not proven on {version}; leave it out with {leave_out}"
    unavailable = {s: {"outcome": "unavailable", "reason": reason} for s in subjects}
    switched_off = {"USE_HUB_KERNELS": "0"} if missing.name == "kernels" else {}
    stand_in_column = f"{column}-without-{missing.name}"
    try:
        env, created = envs.ensure_env(version, extras, without=(missing.name,))
        on_environment(created, time.monotonic() - start)
        stand_in_work = work.with_name(f"{work.name}-without-{missing.name}")
        stand_in = _run_cell(env, inputs, stand_in_work, probes, switched_off)
    except env_commands.EnvError as exc:
        stand_in = _failed(subjects, f"environment: {exc}")
    note = f"stand-in: transformers {version} without {missing.requirement}" + "".join(
        f", {name}={value}" for name, value in switched_off.items()
    )
    for cell in stand_in.values():
        cell["notes"] = [note, *cell.get("notes", [])]
    return [(column, unavailable, False), (stand_in_column, stand_in, True)]


# -- honest cells (end) ----------------------------------------------------------------------------


def _failed(subjects: tuple[str, ...], reason: str) -> dict[str, Any]:
    return {s: {"outcome": "error", "reason": reason} for s in subjects}


def probe_launcher(tasks: list[tuple[str, str]]) -> probe_launch.ProbeLauncher:
    """The launcher of the probes of these (release, column) tasks; `with` it."""
    candidates = [envs.planned_env(version, envs.ENV_EXTRAS[column]) for version, column in tasks]
    return probe_launch.ProbeLauncher(candidates, _probe_environ())


def prepared_launcher(plan: DownstreamPlan | None) -> probe_launch.ProbeLauncher:
    """A launcher for the plan's whole matrix whose host starts now, beside the installed check."""
    tasks = []
    if plan is not None and plan.enabled:
        columns = environment_columns()
        tasks = [(v, c) for v in plan.versions for c, unavailable in columns.items() if unavailable is None]
    launcher = probe_launcher(tasks)
    launcher.start_in_background()
    return launcher


def _probe_environ() -> dict[str, str]:
    return {
        **shared_torch.shared_torch_environ(),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONWARNINGS": "ignore",
    }


def _run_cell(
    env: envs.Env,
    inputs: MatrixInputs,
    work: Path,
    probes: ProbeRun,
    extra_environ: dict[str, str] | None = None,
) -> dict[str, Any]:
    subjects = ("config", "variant") if inputs.variant else ("config",)
    version = env.transformers

    def failed(reason: str) -> dict[str, Any]:
        return _failed(subjects, reason)

    work.mkdir(parents=True, exist_ok=True)
    request = {
        "source": str(inputs.source),
        "downstream": str(inputs.downstream),
        "variant": str(inputs.variant) if inputs.variant else None,
        "work_dir": str(work / "scratch"),
        "tolerances": OUTPUT_TOLERANCE,
        "timeout_s": probes.timeout,
        "scenario_jobs": probes.scenario_jobs,
        "shared_torch": probes.launcher.environ.get(shared_torch.SHARED_TORCH_VAR, ""),
    }
    (work / "request.json").write_text(json.dumps(request), encoding="utf-8")
    result_file = work / "result.json"
    result_file.unlink(missing_ok=True)
    probe_log = work.parent.parent / f"downstream-{work.name}.log"
    with probes.slots:
        returncode = probes.launcher.run(
            env, work / "request.json", result_file, probe_log, probes.timeout * 4 + 120, extra_environ
        )
    if returncode is None:
        return failed("the probe timed out")
    if returncode != 0 or not result_file.is_file():
        tail = probe_log.read_text(errors="replace").strip().splitlines()
        return failed(f"the probe exited with {returncode}: {(tail or ['no output'])[-1][:300]}")
    document = json.loads(result_file.read_text(encoding="utf-8"))
    if document.get("transformers") != version:
        return failed(f"the environment runs transformers {document.get('transformers')}, not {version}")
    probe_launch.keep_shared_modules(env, document)
    cells: dict[str, Any] = document["cells"]
    return cells


def summarize(
    cells: list[DownstreamCell], *, gating: bool | None = True, outcomes: tuple[str, ...] | None = None
) -> list[str]:
    """Cells grouped by (environment, outcome, reason): 'crash on 5.6.2 ... 5.20.2 (base): ...'.

    By default the failing ones; `outcomes` picks others (e.g. the unsupported ones, never proven).
    """
    picked = [
        c
        for c in cells
        if (c.outcome in outcomes if outcomes is not None else c.outcome not in PASSING_OUTCOMES)
        and (gating is None or c.gating == gating)
    ]
    groups: dict[tuple[str, str, str], list[DownstreamCell]] = {}
    for cell in picked:
        # A reason naming its own release ("transformers 5.5.4 does not know ...") groups across releases.
        generic = cell.reason.replace(f"transformers {cell.transformers} ", "this release ")
        groups.setdefault((cell.env, cell.outcome, generic), []).append(cell)
    return [
        f"{outcome} on transformers {version_range([c.transformers for c in group])} ({env}): "
        + (group[0].reason if len(group) == 1 else generic)
        for (env, outcome, generic), group in groups.items()
    ]


def apply_matrix(
    result: FamilyResult,
    plan: DownstreamPlan,
    inputs: MatrixInputs,
    work: Path,
    timeout: float,
    jobs: int,
    case: CellCase | None = None,
    loads: int = 1,
    launcher: probe_launch.ProbeLauncher | None = None,
) -> None:
    """Run the matrix for a family that applies to the model, whatever its installed verdict; gate it.

    A family unsafe on the installed release still gets every cell, so its owner learns which
    releases do load it exactly; the gate only ever lowers a verdict, on the gating releases.
    """
    if result.verdict == "not_applicable" or not inputs.downstream.is_dir():
        return
    result.downstream.selection = result.fused_layout.selection = plan.selection
    if not plan.enabled:
        return
    result.downstream.versions = result.fused_layout.versions = list(plan.versions)
    columns, config_cells, variant_cells = run_matrix(
        plan, inputs, work, timeout, jobs, case, loads, launcher
    )
    result.downstream.environments = result.fused_layout.environments = columns
    result.downstream.cells, result.fused_layout.cells = config_cells, variant_cells
    failures = summarize(config_cells)
    if failures:
        result.verdict = "unsafe" if result.verdict == "safe" else result.verdict
        result.reasons += [f"downstream: {line}" for line in failures]


def matrix_jobs(weights_bytes: int) -> int:
    """How many environments run side by side: HUBFUSE_DOWNSTREAM_JOBS, capped by memory."""
    wanted = settings.DOWNSTREAM_JOBS.value()
    # A probe holds about two copies of the model at once (the repeat loads).
    return loads_that_fit(weights_bytes, 2.4, wanted)


def matrix_loads(weights_bytes: int) -> int:
    """How many scenario processes of all probes run at once: one per core, capped by memory."""
    return loads_that_fit(weights_bytes, 2.4, cores())
