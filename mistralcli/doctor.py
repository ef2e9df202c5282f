"""`mistral doctor`: what this machine gives mistralcli, each line ok / warn / fail with a hint. Python and the
packages, the CPU's features and the kernels they select, threads, the compiled extensions, the Numba cache,
the GPU, the config file, the default model, the hub, and the directories mistralcli writes."""

import importlib
import importlib.metadata
import os
import platform
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

PACKAGES = ("numpy", "numba", "scipy", "gguf", "tokenizers", "llguidance", "tornado", "huggingface_hub", "pydantic")
OPTIONAL = ("torch", "cupy", "llama_cpp")  # test oracles, the GPU path, the llama.cpp peer
EXTENSIONS = ("qmatmul", "decode_step", "attention", "elementwise", "sampler", "quantizers", "block_pool")
CPU_FEATURES = {
    "avx2": "AVX2",
    "fma": "FMA",
    "avx512f": "AVX-512F",
    "avx512bw": "AVX-512BW",
    "avx512vnni": "AVX-512 VNNI",
    "avxvnni": "AVX-VNNI",
    "amx-tile": "AMX",
    "amx-int8": "AMX-INT8",
    "amx-bf16": "AMX-BF16",
}


@dataclass
class Check:
    name: str
    status: str  # "ok", "warn", "fail"
    detail: str
    hint: str = ""


def run_checks(network: bool = True) -> list[Check]:
    checks = [_python(), *_packages(), _cpu(), _threads(), _extensions(), _numba_cache(), _gpu(), _config()]
    checks += [_default_model(), _hub(network), *_directories()]
    return checks


def as_json(checks: list[Check]) -> dict:
    worst = (
        "fail"
        if any(c.status == "fail" for c in checks)
        else "warn"
        if any(c.status == "warn" for c in checks)
        else "ok"
    )
    return {"status": worst, "checks": [asdict(c) for c in checks]}


def _python() -> Check:
    version = platform.python_version()
    return Check(
        "python", "ok", f"{version} ({platform.python_implementation()}, {platform.machine()}, {sys.executable})"
    )


def _packages() -> list[Check]:
    from mistralcli import __version__

    out = [Check("mistralcli", "ok", __version__)]
    for name in PACKAGES:
        try:
            out.append(Check(name, "ok", importlib.metadata.version(name.replace("_", "-"))))
        except importlib.metadata.PackageNotFoundError:
            out.append(Check(name, "fail", "not installed", f"pip install {name.replace('_', '-')}"))
    optional = []
    for name in OPTIONAL:
        try:
            dist = {"cupy": "cupy-cuda12x", "llama_cpp": "llama-cpp-python"}.get(name, name)
            optional.append(f"{name} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    out.append(Check("optional", "ok", ", ".join(optional) or "none (torch, cupy, llama-cpp-python: tests and peers)"))
    return out


def cpu_features() -> dict[str, bool]:
    """The host CPU's features that select kernels (LLVM's view of it, as Numba compiles for)."""
    from llvmlite import binding

    features = binding.get_host_cpu_features()
    return {name: bool(features.get(name, False)) for name in CPU_FEATURES}


def _cpu() -> Check:
    try:
        from mistralcli.ops.cpu import qmatmul

        kernels = qmatmul.simd_name()
    except ImportError as exc:
        return Check(
            "cpu", "fail", f"the kernels cannot be imported ({exc})", "reinstall: pip install --force-reinstall ."
        )
    features = cpu_features()
    has = [label for name, label in CPU_FEATURES.items() if features[name]]
    detail = f"{platform.processor() or platform.machine()}: {', '.join(has) or 'no AVX2'}; kernels: {kernels}"
    if kernels == "portable":
        hint = (
            "MISTRALCLI_NO_SIMD is set" if os.environ.get("MISTRALCLI_NO_SIMD") else "no AVX2: the portable C loops run"
        )
        return Check("cpu", "warn", detail, hint)
    hint = ""
    if features["amx-int8"] or features["avx512vnni"]:
        hint = "AMX/VNNI tiles for prefill are not used yet (issue 19)"
    return Check("cpu", "ok", detail, hint)


def _threads() -> Check:
    from mistralcli.ops.cpu import available_cores

    cores, total = available_cores(), os.cpu_count() or 1
    detail = f"{cores} cores available to this process (of {total}); kernels default to {cores}"
    return Check("threads", "ok", detail, "--threads N (or threads in the config) sets it")


def _extensions() -> Check:
    missing = []
    for name in EXTENSIONS:
        try:
            importlib.import_module(f"mistralcli._ext.{name}")
        except ImportError as exc:
            missing.append(f"{name} ({exc})")
    if missing:
        return Check(
            "extensions", "fail", "missing: " + ", ".join(missing), "rebuild: python setup.py build_ext --inplace"
        )
    return Check("extensions", "ok", f"{len(EXTENSIONS)} compiled: {', '.join(EXTENSIONS)}")


def _numba_cache() -> Check:
    from mistralcli.paths import numba_cache_dir

    directory = Path(os.environ.get("NUMBA_CACHE_DIR") or numba_cache_dir())
    if not directory.exists():
        return Check("numba cache", "ok", f"{directory}: empty (the first run compiles, a few seconds)")
    entries = list(directory.rglob("*.nbi"))
    if not _writable(directory):
        return Check(
            "numba cache", "warn", f"{directory}: not writable", "each run compiles again: set NUMBA_CACHE_DIR"
        )
    return Check("numba cache", "ok", f"{directory}: {len(entries)} compiled functions cached")


def _gpu() -> Check:
    import shutil

    smi = shutil.which("nvidia-smi")
    try:
        cupy = importlib.import_module("cupy")
    except ImportError:
        cupy = None
    except Exception as exc:  # a CuPy without its CUDA libraries fails in odd ways
        return Check("gpu", "warn", f"CuPy is installed but fails to import ({exc})", "pip install cupy-cuda12x")
    if cupy is None:
        detail = "no CuPy" + (", nvidia-smi found" if smi else ", no NVIDIA driver") + ": the CPU kernels run"
        hint = "pip install 'mistralcli[cuda]' for the GPU path" if smi else ""
        return Check("gpu", "ok", detail, hint)
    try:
        count = cupy.cuda.runtime.getDeviceCount()
        name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode() if count else ""
        driver = cupy.cuda.runtime.driverGetVersion()
    except Exception as exc:
        return Check("gpu", "warn", f"CuPy {cupy.__version__}, no usable GPU ({exc})", "check the NVIDIA driver")
    return Check("gpu", "ok", f"{count} GPU(s): {name}; CUDA driver {driver}; CuPy {cupy.__version__}")


def _config() -> Check:
    from mistralcli.config import config_path, effective
    from mistralcli.errors import MistralError

    path = config_path()
    try:
        values = effective()
    except MistralError as exc:
        return Check("config", "fail", str(exc), "mistral config unset KEY, or fix the file")
    if not path.is_file():
        return Check(
            "config",
            "ok",
            f"{path}: none (built-in defaults)" + (f"; {len(values)} set in the environment" if values else ""),
        )
    return Check("config", "ok", f"{path}: {len(values)} set ({', '.join(values) or 'nothing'})")


def _default_model() -> Check:
    from mistralcli.errors import MistralError
    from mistralcli.loading.resolve import DEFAULT_MODEL_INSTALL, default_model_path

    try:
        return Check("default model", "ok", str(default_model_path()))
    except MistralError:
        return Check("default model", "warn", "not installed", DEFAULT_MODEL_INSTALL)


def _hub(network: bool) -> Check:
    from mistralcli.loading.hub import offline

    if offline():
        return Check("hub", "ok", "HF_HUB_OFFLINE is set: models come from the cache")
    if not network:
        return Check("hub", "ok", "not checked (--offline)")
    import httpx
    from huggingface_hub import constants

    endpoint = constants.ENDPOINT
    try:
        httpx.head(endpoint, timeout=3.0, follow_redirects=True)
    except httpx.HTTPError as exc:
        return Check(
            "hub", "warn", f"{endpoint} cannot be reached ({type(exc).__name__})", "models come from the cache only"
        )
    token = "a token is set" if _hf_token() else "no token (mistral login, for gated repos)"
    return Check("hub", "ok", f"{endpoint} answers; {token}")


def _hf_token() -> str | None:
    from huggingface_hub import get_token

    return get_token()


def _directories() -> list[Check]:
    from huggingface_hub import constants

    from mistralcli.config import config_path
    from mistralcli.paths import cache_dir
    from mistralcli.sqlite_store import data_dir

    out = []
    for name, directory in (
        ("cache dir", cache_dir()),
        ("data dir", data_dir()),
        ("config dir", config_path().parent),
        ("hub cache", Path(constants.HF_HUB_CACHE)),
    ):
        existing = next((p for p in [directory, *directory.parents] if p.exists()), None)
        if existing is not None and _writable(existing):
            out.append(Check(name, "ok", f"{directory}" + ("" if directory.exists() else " (created when needed)")))
        else:
            out.append(
                Check(name, "fail", f"{directory}: not writable", "set MISTRALCLI_CACHE / MISTRALCLI_DATA / HF_HOME")
            )
    return out


def _writable(directory: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=directory):
            return True
    except OSError:
        return False
