#!/usr/bin/env python3
"""Fake nvidia-smi for llamarig testbed rigs (stdlib only, python3 >= 3.9).

GPUs are declared in /etc/llamarig-testbed/gpus.json (a JSON list of objects with
name, memory_mib, compute_cap, pci_bus_id, uuid, power_default_w, power_min_w,
power_max_w; optional memory_used_mib, driver_version, power_draw_w (what power.draw
reports, 20 W by default; a test sets it to check energy figures, and a draw above the
current limit reads as the limit, as a real card holds it), clocks_sm_mhz, clocks_mem_mhz).  Mutable state (power limit,
persistence mode) lives in /run/fake-nvidia/state.json: /run is a tmpfs, so it is
lost on reboot exactly like a real power limit.

Paths can be overridden with FAKE_NVIDIA_GPUS / FAKE_NVIDIA_STATE (unit tests).
Output formats follow the real nvidia-smi (driver 5xx).
"""
import fcntl
import json
import os
import sys
import time

GPUS_FILE = os.environ.get("FAKE_NVIDIA_GPUS", "/etc/llamarig-testbed/gpus.json")
STATE_FILE = os.environ.get("FAKE_NVIDIA_STATE", "/run/fake-nvidia/state.json")
DRIVER_VERSION = "550.127.05"
CUDA_VERSION = "12.4"

# exit codes of the real tool
RC_OK, RC_INVALID_ARG, RC_NO_PERMISSION, RC_NOT_FOUND, RC_UNKNOWN = 0, 2, 4, 6, 255


class SmiError(Exception):
    def __init__(self, msg, rc=RC_INVALID_ARG):
        super().__init__(msg)
        self.msg, self.rc = msg, rc


# ---------------------------------------------------------------- data
def load_gpus():
    try:
        with open(GPUS_FILE) as f:
            raw = json.load(f)
    except FileNotFoundError:
        raw = []
    except ValueError as e:
        raise SmiError("Failed to initialize NVML: Unknown Error (bad %s: %s)" % (GPUS_FILE, e), RC_UNKNOWN)
    if not raw:
        raise SmiError(
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
            "Make sure that the latest NVIDIA driver is installed and running.", 9)
    gpus = []
    for i, g in enumerate(raw):
        g = dict(g)
        g.setdefault("name", "NVIDIA GeForce RTX 3090")
        g.setdefault("memory_mib", 24576)
        g.setdefault("compute_cap", "8.6")
        g.setdefault("pci_bus_id", "00000000:%02X:00.0" % (i + 1))
        g.setdefault("uuid", "GPU-%08x-0000-0000-0000-%012x" % (0xFA4E0000 + i, i))
        g.setdefault("power_default_w", 350.0)
        g.setdefault("power_min_w", 100.0)
        g.setdefault("power_max_w", g["power_default_w"])
        g.setdefault("memory_used_mib", 1)
        g.setdefault("driver_version", DRIVER_VERSION)
        g.setdefault("power_draw_w", 20.0)
        g.setdefault("clocks_sm_mhz", 1695)
        g.setdefault("clocks_mem_mhz", 9751)
        g["index"] = i
        gpus.append(g)
    return gpus


class State:
    """Locked read-modify-write of the state file."""

    def __init__(self, gpus):
        self.gpus = gpus
        self.fd = None
        self.data = {}

    def __enter__(self):
        d = os.path.dirname(STATE_FILE)
        os.makedirs(d, exist_ok=True)
        self.fd = os.open(STATE_FILE + ".lock", os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            with open(STATE_FILE) as f:
                self.data = json.load(f)
        except (FileNotFoundError, ValueError):
            self.data = {}
        return self

    def gpu(self, g):
        s = self.data.setdefault(g["uuid"], {})
        s.setdefault("power_limit_w", float(g["power_default_w"]))
        s.setdefault("persistence_mode", False)
        return s

    def save(self):
        tmp = STATE_FILE + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1, sort_keys=True)
        os.replace(tmp, STATE_FILE)

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)


def read_state(gpus):
    """Unlocked, read-only view (missing/unwritable state dir => defaults)."""
    try:
        with open(STATE_FILE) as f:
            data = json.load(f)
    except (OSError, ValueError):
        data = {}
    out = {}
    for g in gpus:
        s = dict(data.get(g["uuid"], {}))
        s.setdefault("power_limit_w", float(g["power_default_w"]))
        s.setdefault("persistence_mode", False)
        out[g["uuid"]] = s
    return out


# ---------------------------------------------------------------- fields
def _w(v):
    return "%.2f" % float(v)


def draw(g, s):
    """The declared draw, held at the current power limit."""
    return min(float(g["power_draw_w"]), float(s["power_limit_w"]))


# field -> (header unit or None, getter(gpu, state, count) -> (value, unit-suffix or None))
def _field_table():
    def mem(key):
        def get(g, s, n):
            total, used = int(g["memory_mib"]), int(g["memory_used_mib"])
            val = {"total": total, "used": used, "free": total - used,
                   "reserved": 0}[key]
            return str(val), "MiB"
        return "MiB", get

    def pw(fn):
        return "W", lambda g, s, n: (_w(fn(g, s)), "W")

    def plain(fn):
        return None, lambda g, s, n: (str(fn(g, s, n)), None)

    t = {
        "count": plain(lambda g, s, n: n),
        "index": plain(lambda g, s, n: g["index"]),
        "name": plain(lambda g, s, n: g["name"]),
        "uuid": plain(lambda g, s, n: g["uuid"]),
        "pci.bus_id": plain(lambda g, s, n: g["pci_bus_id"]),
        "pci.bus": plain(lambda g, s, n: "0x" + g["pci_bus_id"].split(":")[1]),
        "serial": plain(lambda g, s, n: "[N/A]"),
        "driver_version": plain(lambda g, s, n: g["driver_version"]),
        "vbios_version": plain(lambda g, s, n: "94.02.42.00.A9"),
        "compute_cap": plain(lambda g, s, n: g["compute_cap"]),
        "persistence_mode": plain(lambda g, s, n: "Enabled" if s["persistence_mode"] else "Disabled"),
        "pstate": plain(lambda g, s, n: "P8"),
        "compute_mode": plain(lambda g, s, n: "Default"),
        "memory.total": mem("total"),
        "memory.used": mem("used"),
        "memory.free": mem("free"),
        "memory.reserved": mem("reserved"),
        "power.management": plain(lambda g, s, n: "Enabled"),
        "power.draw": pw(draw),
        "power.limit": pw(lambda g, s: s["power_limit_w"]),
        "enforced.power.limit": pw(lambda g, s: s["power_limit_w"]),
        "power.default_limit": pw(lambda g, s: g["power_default_w"]),
        "power.min_limit": pw(lambda g, s: g["power_min_w"]),
        "power.max_limit": pw(lambda g, s: g["power_max_w"]),
        "temperature.gpu": (None, lambda g, s, n: ("30", None)),
        "clocks.sm": ("MHz", lambda g, s, n: (str(g["clocks_sm_mhz"]), "MHz")),
        "clocks.mem": ("MHz", lambda g, s, n: (str(g["clocks_mem_mhz"]), "MHz")),
        "clocks.max.sm": ("MHz", lambda g, s, n: (str(g["clocks_sm_mhz"]), "MHz")),
        "utilization.gpu": ("%", lambda g, s, n: ("0", "%")),
        "utilization.memory": ("%", lambda g, s, n: ("0", "%")),
        "fan.speed": ("%", lambda g, s, n: ("30", "%")),
    }
    aliases = {
        "gpu_name": "name", "gpu_uuid": "uuid", "gpu_bus_id": "pci.bus_id",
        "compute_capability": "compute_cap", "persistence-mode": "persistence_mode",
        "memory.total": "memory.total", "power.limit": "power.limit",
        "power.default": "power.default_limit", "power.min": "power.min_limit",
        "power.max": "power.max_limit", "enforced.power": "enforced.power.limit",
    }
    for a, target in aliases.items():
        t.setdefault(a, t[target])
    return t


FIELDS = _field_table()


def query_gpu(gpus, selected, fields_arg, fmt):
    opts = [o.strip() for o in fmt.split(",") if o.strip()]
    if not opts or opts[0] != "csv" or any(o not in ("csv", "noheader", "nounits") for o in opts):
        raise SmiError('"%s" is not a valid format.' % fmt if fmt else "Format not specified.")
    noheader, nounits = "noheader" in opts, "nounits" in opts
    fields = [f.strip() for f in fields_arg.split(",") if f.strip()]
    if not fields:
        raise SmiError("No fields specified.")
    for f in fields:
        if f not in FIELDS:
            raise SmiError('Field "%s" is not a valid field to query.\n' % f)
    state = read_state(gpus)
    lines = []
    if not noheader:
        hdr = []
        for f in fields:
            unit = FIELDS[f][0]
            hdr.append("%s [%s]" % (f, unit) if unit else f)
        lines.append(", ".join(hdr))
    for g in selected:
        row = []
        for f in fields:
            val, unit = FIELDS[f][1](g, state[g["uuid"]], len(gpus))
            row.append(val if (nounits or not unit) else ("%s %s" % (val, unit) if unit != "%" else val + " %"))
        lines.append(", ".join(row))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- commands
def select(gpus, ids):
    if ids is None:
        return list(gpus)
    out = []
    for tok in ids.split(","):
        tok = tok.strip()
        match = None
        for g in gpus:
            if tok == str(g["index"]) or tok == g["uuid"] or tok.lower() == g["pci_bus_id"].lower() \
                    or tok.lower() == g["pci_bus_id"].lower()[4:]:
                match = g
        if match is None:
            raise SmiError("No devices were found" if tok.isdigit() else
                           'Invalid combination of input arguments. Please run \'nvidia-smi -h\' for help.',
                           RC_NOT_FOUND if tok.isdigit() else RC_INVALID_ARG)
        if match not in out:
            out.append(match)
    return out


def is_root():
    return os.geteuid() == 0


def set_power_limit(gpus, selected, watts_arg):
    try:
        watts = float(watts_arg)
    except ValueError:
        raise SmiError('Invalid value "%s" for power limit.' % watts_arg)
    out, rc = [], RC_OK
    with State(gpus) as st:
        for g in selected:
            bus = g["pci_bus_id"]
            if not is_root():
                out.append("Failed to set power management limit for GPU %s: Insufficient Permissions" % bus)
                rc = RC_NO_PERMISSION
                break
            lo, hi = float(g["power_min_w"]), float(g["power_max_w"])
            if not (lo <= watts <= hi):
                out.append("Provided power limit %s W is not a valid power limit which should be between "
                           "%s W and %s W for GPU %s" % (_w(watts), _w(lo), _w(hi), bus))
                rc = RC_INVALID_ARG
                break
            s = st.gpu(g)
            old = s["power_limit_w"]
            s["power_limit_w"] = watts
            out.append("Power limit for GPU %s was set to %s W from %s W." % (bus, _w(watts), _w(old)))
        st.save()  # like the real tool, GPUs handled before an error keep their new limit
    if rc == RC_OK:
        out.append("All done.")
    else:
        out.append("Terminating early due to previous errors.")
    return "\n".join(out) + "\n", rc


def set_persistence(gpus, selected, mode_arg):
    if mode_arg not in ("0", "1", "ENABLED", "DISABLED", "Enabled", "Disabled"):
        raise SmiError('Invalid value "%s" for persistence mode.' % mode_arg)
    enable = mode_arg in ("1", "ENABLED", "Enabled")
    out, rc = [], RC_OK
    with State(gpus) as st:
        for g in selected:
            bus = g["pci_bus_id"]
            if not is_root():
                out.append("Unable to set persistence mode for GPU %s: Insufficient Permissions" % bus)
                rc = RC_NO_PERMISSION
                break
            s = st.gpu(g)
            word = "Enabled" if enable else "Disabled"
            if s["persistence_mode"] == enable:
                out.append("Persistence mode is already %s for GPU %s." % (word, bus))
            else:
                s["persistence_mode"] = enable
                out.append("%s persistence mode for GPU %s." % (word, bus))
        if rc == RC_OK:
            st.save()
    if rc == RC_OK:
        out.append("All done.")
    else:
        out.append("Terminating early due to previous errors.")
    return "\n".join(out) + "\n", rc


def list_gpus(selected):
    return "".join("GPU %d: %s (UUID: %s)\n" % (g["index"], g["name"], g["uuid"]) for g in selected)


def summary(gpus, selected):
    state = read_state(gpus)
    w = 91
    bar = "+" + "-" * (w - 2) + "+"
    lines = [time.strftime("%a %b %d %H:%M:%S %Y"), bar,
             "| NVIDIA-SMI %-21s Driver Version: %-14s CUDA Version: %-9s|" % (
                 "550.127.05", gpus[0]["driver_version"], CUDA_VERSION),
             "|" + "-" * 41 + "+" + "-" * 24 + "+" + "-" * 22 + "+",
             "| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |",
             "| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |",
             "|" + "=" * 41 + "+" + "=" * 24 + "+" + "=" * 22 + "|"]
    for g in selected:
        s = state[g["uuid"]]
        lines.append("| %3d  %-26.26s %6s | %-16s  Off | %20s |" % (
            g["index"], g["name"], "On" if s["persistence_mode"] else "Off", g["pci_bus_id"], "N/A"))
        lines.append("| 30%%   30C    P8 %10s / %6s | %9s / %9s | %7s      Default |" % (
            "%dW" % round(draw(g, s)), "%dW" % round(s["power_limit_w"]), "%dMiB" % g["memory_used_mib"],
            "%dMiB" % g["memory_mib"], "0%"))
        lines.append("|" + "-" * 41 + "+" + "-" * 24 + "+" + "-" * 22 + "+")
    lines += ["", bar,
              "| Processes:" + " " * 78 + "|",
              "|  GPU   GI   CI        PID   Type   Process name" + " " * 31 + "GPU Memory |",
              "|        ID   ID" + " " * 63 + "Usage      |",
              "|" + "=" * (w - 2) + "|",
              "|  No running processes found" + " " * 61 + "|",
              bar]
    return "\n".join(lines) + "\n"


def query_power(gpus, selected):
    state = read_state(gpus)
    lines = ["", "==============NVSMI LOG==============", "",
             "%-55s: %s" % ("Timestamp", time.strftime("%a %b %d %H:%M:%S %Y")),
             "%-55s: %s" % ("Driver Version", gpus[0]["driver_version"]),
             "%-55s: %s" % ("CUDA Version", CUDA_VERSION), "",
             "%-55s: %d" % ("Attached GPUs", len(gpus))]
    for g in selected:
        s = state[g["uuid"]]
        lines += ["GPU %s" % g["pci_bus_id"], "    GPU Power Readings"]
        for k, v in [("Power Draw", draw(g, s)), ("Current Power Limit", s["power_limit_w"]),
                     ("Requested Power Limit", s["power_limit_w"]),
                     ("Default Power Limit", g["power_default_w"]),
                     ("Min Power Limit", g["power_min_w"]), ("Max Power Limit", g["power_max_w"])]:
            lines.append("        %-47s: %s W" % (k, _w(v)))
    return "\n".join(lines) + "\n\n"


USAGE = "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.\n"


def parse(argv):
    """Return dict of options; raise SmiError on unknown ones."""
    opts = {"id": None, "query": None, "format": None, "pl": None, "pm": None,
            "list": False, "q": False, "display": None}
    it = iter(range(len(argv)))
    i = 0

    def value(i, name):
        if i + 1 >= len(argv):
            raise SmiError('Option "%s" requires an argument.\n\n' % name + USAGE.strip())
        return argv[i + 1]

    while i < len(argv):
        a = argv[i]
        key, eq, val = a.partition("=")
        long_map = {"--id": "id", "-i": "id", "--query-gpu": "query", "--format": "format",
                    "-pl": "pl", "--power-limit": "pl", "-pm": "pm", "--persistence-mode": "pm",
                    "-d": "display", "--display": "display"}
        if key in long_map:
            if eq:
                opts[long_map[key]] = val
                i += 1
            else:
                opts[long_map[key]] = value(i, key)
                i += 2
            continue
        if a in ("-L", "--list-gpus"):
            opts["list"] = True
        elif a in ("-q", "--query"):
            opts["q"] = True
        elif a in ("-h", "--help"):
            opts["help"] = True
        else:
            raise SmiError(USAGE.strip() if not a.startswith("-") else
                           'Unknown option "%s"\n\n%s' % (a, USAGE.strip()))
        i += 1
    del it
    return opts


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts = parse(argv)
        if opts.get("help"):
            sys.stdout.write("NVIDIA System Management Interface -- v550.127.05 (llamarig testbed fake)\n"
                             "Supported: -L, -q [-d POWER], --query-gpu=... --format=csv[,noheader][,nounits],"
                             " -i ID, -pl W, -pm 0|1\n")
            return RC_OK
        gpus = load_gpus()
        selected = select(gpus, opts["id"])
        actions = [k for k in ("query", "pl", "pm", "list", "q") if opts[k]]
        if len(actions) > 1:
            raise SmiError(USAGE.strip())
        if opts["query"] is not None:
            if opts["format"] is None:
                raise SmiError("--format must be specified with --query-gpu.\n\n" + USAGE.strip())
            sys.stdout.write(query_gpu(gpus, selected, opts["query"], opts["format"]))
            return RC_OK
        if opts["format"] is not None:
            raise SmiError(USAGE.strip())
        if opts["pl"] is not None:
            out, rc = set_power_limit(gpus, selected, opts["pl"])
            sys.stdout.write(out)
            return rc
        if opts["pm"] is not None:
            out, rc = set_persistence(gpus, selected, opts["pm"])
            sys.stdout.write(out)
            return rc
        if opts["list"]:
            sys.stdout.write(list_gpus(selected))
            return RC_OK
        if opts["q"]:
            sys.stdout.write(query_power(gpus, selected))
            return RC_OK
        sys.stdout.write(summary(gpus, selected))
        return RC_OK
    except SmiError as e:
        sys.stdout.write(e.msg.rstrip("\n") + "\n")
        return e.rc


if __name__ == "__main__":
    sys.exit(main())
