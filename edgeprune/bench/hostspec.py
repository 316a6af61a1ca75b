"""This host's CPU: model name, clock, SIMD flags, caches; the fingerprint a host calibration is cached under.

Read by the cost model (which host a calibration belongs to) and by the host calibration itself; a module of
its own so that neither has to import the other.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Optional


def cpu_info() -> dict:
    """Model name, vendor, family/model numbers, flags and nominal clock from /proc/cpuinfo (Linux)."""
    info: dict = {"model_name": platform.processor() or platform.machine(), "flags": [], "mhz": None}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    first = text.split("\n\n")[0]
    for line in first.splitlines():
        key, _, val = line.partition(":")
        key, val = key.strip().lower(), val.strip()
        if key == "model name":
            info["model_name"] = val
        elif key == "vendor_id":
            info["vendor"] = val
        elif key == "cpu family":
            info["family"] = val
        elif key == "model":
            info["model"] = val
        elif key in ("flags", "features"):
            info["flags"] = val.split()
        elif key == "cpu mhz":
            info["mhz"] = float(val)
    if info["mhz"] is None:
        m = re.search(r"@\s*([\d.]+)\s*GHz", info["model_name"])
        info["mhz"] = float(m[1]) * 1000 if m else None
    return info


def simd_of(flags) -> dict:
    """fp32 and int8 operations per cycle per core, from the ISA flags (x86 or ARM).

    Formula: fp32 FLOP/cycle = lanes x 2 (FMA) x FMA units; int8 OP/cycle = fp32 x 4 with a dot-product
    instruction (AVX-512 VNNI / AVX-VNNI / ARM dotprod), else x 2. FMA units = 2 for AVX-512 and AVX2 (server
    Xeon / EPYC cores have two FMA ports), 2 for ARM NEON cores that report asimd (big cores; an assumption)."""
    f = set(flags or [])
    if "avx512f" in f:
        isa, lanes, units = "AVX-512", 16, 2
    elif "avx2" in f and "fma" in f:
        isa, lanes, units = "AVX2+FMA", 8, 2
    elif "asimd" in f:
        isa, lanes, units = "NEON", 4, 2
    else:
        isa, lanes, units = "SSE", 4, 1
    fp32 = lanes * 2 * units
    dot = bool(f & {"avx512_vnni", "avx_vnni", "asimddp"})
    return {"isa": isa, "lanes": lanes, "fma_units": units, "fp32_per_cycle": fp32,
            "int8_per_cycle": fp32 * (4 if dot else 2), "int8_dot": dot}


def l2_cache_kb() -> Optional[float]:
    """Per-core L2 size (KiB) from /sys/devices/system/cpu/cpu0/cache (Linux); None where absent."""
    for idx in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            if (idx / "level").read_text().strip() == "2" and (idx / "type").read_text().strip() != "Instruction":
                size = (idx / "size").read_text().strip().upper()
                mult = 1024 if size.endswith("M") else 1
                return float(size.rstrip("KM")) * mult
        except (OSError, ValueError):
            continue
    return None


def host_spec() -> dict:
    """This host's spec peak (1 thread): ISA width x FMA units x the nominal clock /proc/cpuinfo reports.

    In a VM the reported clock is the TSC's, not the boost clock, so efficiencies against this peak can
    exceed 1; they are still comparable between runs on the same kind of machine."""
    ci = cpu_info()
    s = simd_of(ci["flags"])
    ghz = (ci["mhz"] or 2000.0) / 1000.0
    return {
        "cpu": ci["model_name"], "vendor": ci.get("vendor"), "family": ci.get("family"), "model": ci.get("model"),
        "cores": os.cpu_count(), "clock_ghz": round(ghz, 3), "l2_kb": l2_cache_kb(), **s,
        "peak_fp32_gflops": round(ghz * s["fp32_per_cycle"], 2),
        "peak_int8_gops": round(ghz * s["int8_per_cycle"], 2),
        "formula": (f"{ghz:.2f} GHz (cpu MHz in /proc/cpuinfo) x {s['fp32_per_cycle']} FLOP/cycle "
                    f"({s['isa']}: {s['lanes']} fp32 lanes x 2 (FMA) x {s['fma_units']} FMA units), 1 thread; "
                    f"int8 x{s['int8_per_cycle'] // s['fp32_per_cycle']} "
                    f"({'dot-product instructions' if s['int8_dot'] else 'no int8 dot product'})"),
    }


def fingerprint(spec: Optional[dict] = None) -> str:
    """Identifies the kind of CPU a calibration was measured on: model name, family/model, ISA."""
    s = spec or host_spec()
    return f"{s['cpu']} | family {s.get('family')} model {s.get('model')} | {s['isa']}"


def cache_dir() -> Path:
    """$EDGEPRUNE_CACHE, else $XDG_CACHE_HOME/edgeprune, else ~/.cache/edgeprune."""
    env = os.environ.get("EDGEPRUNE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeprune"


def cached_calibration_path(fp: Optional[str] = None) -> Path:
    """Where ``calibrate_host`` caches the calibration of the host with fingerprint ``fp``."""
    import hashlib

    h = hashlib.sha256((fp or fingerprint()).encode()).hexdigest()[:12]
    return cache_dir() / f"host-calibration-{h}.json"


# ------------------------------------------------------------------------------------------ the suite
