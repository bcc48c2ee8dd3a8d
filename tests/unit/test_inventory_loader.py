"""llamarig's offline loader must give each host exactly the data pyinfra gives it."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llamarig.hostdata.inventory import InventoryError, load_inventory

ROOT = Path(__file__).resolve().parents[2]


def pyinfra_view(inventory: Path, cwd: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "pyinfra", str(inventory), "debug-inventory", "--json"],
                         cwd=cwd, capture_output=True, text=True, check=True)
    return {host["name"]: host for host in json.loads(out.stdout)}


def write_layout(tmp: Path) -> Path:
    (tmp / "inv" / "group_data").mkdir(parents=True)
    (tmp / "inv" / "rigs.py").write_text(
        "garage = [('g1', {'ssh_hostname': '127.0.0.1', 'power_limit_w': 300}), 'g2']\n"
        "office = (['o1'], {'build_ref': 'office-ref'})\n"
    )
    (tmp / "inv" / "group_data" / "garage.py").write_text(
        "from os import path\nbuild_ref = 'garage-ref'\nservices = [{'name': 's', 'model': 'm', 'port': 1}]\n")
    (tmp / "inv" / "group_data" / "rigs.py").write_text("verify_max_tokens = 7\nbuild_ref = 'file-group-ref'\n")
    (tmp / "inv" / "group_data" / "all.py").write_text("hub_endpoint = 'http://127.0.0.1:1'\n")
    return tmp / "inv" / "rigs.py"


def test_loader_matches_pyinfra(tmp_path):
    inventory = write_layout(tmp_path)
    ours = {h.name: h.data for h in load_inventory(inventory, cwd=ROOT)}
    theirs = pyinfra_view(inventory, ROOT)
    assert set(ours) == set(theirs) == {"g1", "g2", "o1"}
    for host in load_inventory(inventory, cwd=ROOT):
        assert host.groups == theirs[host.name]["groups"]
        assert json.loads(json.dumps(host.data)) == theirs[host.name]["data"], host.name
    assert ours["g1"]["power_limit_w"] == 300
    assert ours["o1"]["verify_max_tokens"] == 7
    assert ours["o1"]["build_ref"] == "file-group-ref" and ours["g2"]["build_ref"] == "file-group-ref"
    assert ours["g2"]["hub_endpoint"] == "http://127.0.0.1:1"  # inventory-dir all.py over cwd all.py
    assert "path" not in ours["g1"]  # an imported name is not data


def test_broken_inventory_is_an_error_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("rigs = [\n")
    with pytest.raises(InventoryError) as exc:
        load_inventory(bad)
    assert str(exc.value) == f"{bad}, line 1: could not be loaded: SyntaxError: '[' was never closed"


# --- shape errors: every malformed inventory is one InventoryError naming the file (and the host, or the line) ---

HOST_DATA = 'such as {"ssh_hostname": "192.168.1.50"}'
NO_HOSTS = 'no hosts: expected at least one host, in a list such as rigs = [("r1", {"ssh_hostname": "192.168.1.50"})]'
NOT_A_GROUP = "(a name that is not a group starts with _)"


def error_of(tmp_path: Path, text: str, name: str = "rigs.py") -> tuple[Path, str]:
    """(the inventory file, the message of the InventoryError loading it raises)."""
    inv = tmp_path / name
    inv.write_text(textwrap.dedent(text))
    with pytest.raises(InventoryError) as exc:
        load_inventory(inv, cwd=tmp_path)
    return inv, str(exc.value)


@pytest.mark.parametrize("text, expected", [
    ('rigs = [("r1", ["x"])]', "host r1 (group rigs): its host data is a list: expected a mapping of host data "
                               f"keys to values, {HOST_DATA}"),
    ('rigs = [("r1", "data")]', "host r1 (group rigs): its host data is a string ('data'): expected a mapping of "
                                f"host data keys to values, {HOST_DATA}"),
    ('rigs = ["r0", ("r1", None)]', "host r1 (group rigs): its host data is None: expected a mapping of host data "
                                    f"keys to values, {HOST_DATA}"),
    ('rigs = [("r1", {1: "x"})]', f"host r1 (group rigs): host data key 1 is an int: expected a string key, {HOST_DATA}"),
])
def test_host_data_that_is_not_a_mapping_is_refused(tmp_path, text, expected):
    inv, message = error_of(tmp_path, text)
    assert message == f"{inv}: {expected}"


@pytest.mark.parametrize("text, expected", [
    ('rigs = [("r1", {}, "extra")]', "group rigs, entry 0: expected a host name or a (name, data) pair, "
                                     "got a tuple of 3 item(s)"),
    ('rigs = [("r1",)]', "group rigs, entry 0: expected a host name or a (name, data) pair, got a tuple of 1 item(s)"),
    ('rigs = ["r0", ["r1", {"ssh_user": "root"}]]',
     "group rigs, entry 1: expected a host name or a (name, data) pair, got a list: write the pair in parentheses, "
     "('r1', {...})"),
    ('rigs = ["r0", 5]', "group rigs, entry 1: expected a host name or a (name, data) pair, got an int"),
    ('rigs = ["r0", {"name": "r1"}]', "group rigs, entry 1: expected a host name or a (name, data) pair, got a dict"),
    # pyinfra ignores such a list with a warning: a helper list needs a leading _
    ('rigs = ["r0"]\nGPUS = [{"model": "NVIDIA GeForce RTX 3090", "memory_gib": 24}] * 2',
     f"group GPUS, entry 0: expected a host name or a (name, data) pair, got a dict {NOT_A_GROUP}"),
])
def test_a_host_entry_that_is_neither_a_name_nor_a_pair_is_refused(tmp_path, text, expected):
    inv, message = error_of(tmp_path, text)
    assert message == f"{inv}: {expected}"


@pytest.mark.parametrize("text, expected", [
    ('rigs = [(5, {"ssh_user": "root"})]', "group rigs, entry 0: host name 5 is an int: expected a non-empty string"),
    ('rigs = [(None, {})]', "group rigs, entry 0: host name None is None: expected a non-empty string"),
    ('rigs = ["r0", ""]', "group rigs, entry 1: host name '': expected a non-empty string without control characters"),
    ('rigs = ["  "]', "group rigs, entry 0: host name '  ': expected a non-empty string without control characters"),
    ('rigs = [("r1\\nExecStartPre=/bin/sh", {})]',
     "group rigs, entry 0: host name 'r1\\nExecStartPre=/bin/sh': expected a non-empty string without control "
     "characters"),
])
def test_a_host_name_that_is_not_a_non_empty_string_is_refused(tmp_path, text, expected):
    inv, message = error_of(tmp_path, text)
    assert message == f"{inv}: {expected}"


@pytest.mark.parametrize("text, why", [
    ("rigs = []\n", " (rigs is empty)"),
    ("# no host yet\n", ""),
    ('import os\nrigs = "r1"\n', " (rigs is a string ('r1'), not a list)"),
    ("garage = []\noffice = ([], {'build_ref': 'b1'})\n", " (garage and office are empty)"),
    ("all = []\n", " (all is empty)"),
])
def test_an_inventory_without_hosts_is_refused(tmp_path, text, why):
    inv, message = error_of(tmp_path, text)
    assert message == f"{inv}: {NO_HOSTS}{why}"


@pytest.mark.parametrize("text, expected", [
    ('rigs = {"r1": {"ssh_hostname": "10.0.0.1"}, "r2": {}}',
     f"group rigs is a dict: expected a list of hosts, such as rigs = [('r1', {{...}}), ('r2', {{...}})] {NOT_A_GROUP}"),
    ('rigs = {"r1", "r2"}', 'group rigs is a set: expected a list of hosts, in brackets, such as '
                            f'rigs = [("r1", {{"ssh_hostname": "192.168.1.50"}}), "r2"] {NOT_A_GROUP}'),
    ('rigs = (name for name in ["r1", "r2"])', "group rigs is a generator: expected a list of hosts (write the "
                                               f"comprehension in brackets, or list(...)) {NOT_A_GROUP}"),
    ('rigs = ("r1", {"ssh_hostname": "10.0.0.1"})',
     "group rigs is a tuple of 2 item(s): expected a list of hosts, or a (list of hosts, group data) pair "
     "(one host is written rigs = [('r1', {...})])"),
    ('rigs = (["r1"], {"build_ref": "b1"}, "x")',
     "group rigs is a tuple of 3 item(s): expected a list of hosts, or a (list of hosts, group data) pair"),
    ('rigs = (["r1"], ["build_ref"])', 'group rigs: its group data is a list: expected a mapping of group data keys '
                                       'to values, such as {"build_ref": "b7100"}'),
])
def test_a_group_that_is_not_a_list_of_hosts_is_refused(tmp_path, text, expected):
    inv, message = error_of(tmp_path, text)
    assert message == f"{inv}: {expected}"


def test_helpers_that_are_no_groups_stay_allowed(tmp_path):
    inv = tmp_path / "rigs.py"
    inv.write_text(textwrap.dedent("""\
        import os
        GPU_3090 = {"model": "NVIDIA GeForce RTX 3090", "memory_gib": 24}
        MODELS = {"glm": {"repo": "unsloth/GLM-4.7-GGUF"}}
        common = {"ssh_user": "root", "gpus": [GPU_3090]}
        port = 8000
        _gpus = [GPU_3090] * 2
        def _host(n):
            return {**common, "ssh_hostname": f"10.0.0.{n}"}
        rigs = [("r1", _host(1))]
    """))
    [r1] = load_inventory(inv, cwd=tmp_path)
    assert r1.name == "r1" and r1.data == {"ssh_user": "root", "gpus": [{"model": "NVIDIA GeForce RTX 3090",
                                                                         "memory_gib": 24}], "ssh_hostname": "10.0.0.1"}


@pytest.mark.parametrize("text, places", [
    ('rigs = [("r1", {"ssh_hostname": "10.0.0.1"}), "r2", ("r1", {"ssh_hostname": "10.0.0.9"})]',
     "in group rigs (entries 0 and 2)"),
    ('garage = [("r1", {"ssh_hostname": "10.0.0.1"})]\noffice = ["r2", ("r1", {"ssh_hostname": "10.0.0.9"})]',
     "in group garage (entry 0) and in group office (entry 1)"),
    ('all = [("r1", {"ssh_hostname": "10.0.0.1"})]\ngarage = [("r1", {"power_limit_w": 300})]',
     "in group all (entry 0) and in group garage (entry 0)"),
])
def test_a_host_listed_twice_with_different_data_is_refused(tmp_path, text, places):
    inv, message = error_of(tmp_path, text)
    assert message == (f"{inv}: host r1 is listed twice with different data, {places}: expected its data in one "
                       "entry (pyinfra would merge the two, one's keys silently overriding the other's); list it by "
                       "name alone in other groups")


@pytest.mark.parametrize("text, expected", [
    ('rigs: ["r1"]\n', "line 1: rigs: ['r1'] is an annotation, not an assignment: expected rigs = VALUE (YAML's "
                       "key: value sets nothing in Python)"),
    ('# rigs\n[("r1", {"ssh_hostname": "10.0.0.1"})]\n',
     'line 2: a list on its own is not a group: expected a name for it, such as '
     'rigs = [("r1", {"ssh_hostname": "192.168.1.50"})]'),
])
def test_a_statement_that_defines_no_group_is_refused(tmp_path, text, expected):
    inv, message = error_of(tmp_path, text)
    assert message == f"{inv}, {expected}"


def test_a_host_outside_a_declared_all_is_refused(tmp_path):
    inv, message = error_of(tmp_path, 'all = ["r1"]\ngarage = ["r1", "r9"]')
    assert message == (f"{inv}: host r9 (group garage) is not in group all: expected every host in all, as the "
                       "file defines all (pyinfra would leave r9 out)")


def test_membership_in_several_groups_stays_as_pyinfra_has_it(tmp_path):
    """A host's data in one entry, its name alone (or the same data) elsewhere; the group all's host data."""
    (tmp_path / "inv").mkdir()
    inventory = tmp_path / "inv" / "rigs.py"
    inventory.write_text(textwrap.dedent("""\
        all = [("r1", {"ssh_hostname": "10.0.0.1", "power_limit_w": 250}), "r2", ("r3", {"ssh_port": 2222})]
        garage = ["r1", "r2", ("r3", {"ssh_port": 2222})]
        fast = (["r1", "r3"], {"build_ref": "fast-ref"})
        office = [("r3", {"ssh_port": 2222}), "r2", "r2"]
    """))
    ours = {h.name: h for h in load_inventory(inventory, cwd=ROOT)}
    theirs = pyinfra_view(inventory, ROOT)
    assert list(ours) == ["r1", "r2", "r3"] and set(theirs) == set(ours)
    for name, host in ours.items():
        assert host.groups == theirs[name]["groups"], name
        assert json.loads(json.dumps(host.data)) == theirs[name]["data"], name
    assert ours["r1"].data["power_limit_w"] == 250  # the group all's host data counts (highest, as in pyinfra)
    assert ours["r3"].data["build_ref"] == "fast-ref" and ours["r3"].data["ssh_port"] == 2222


@pytest.mark.parametrize("word, spelling", [("true", "True"), ("false", "False"), ("null", "None"),
                                            ("none", "None"), ("yes", "True"), ("no", "False")])
def test_a_load_error_names_the_line_and_yaml_words_get_their_python_spelling(tmp_path, word, spelling):
    inv, message = error_of(tmp_path, f"""\
        # a rig
        rigs = [
            ("r1", {{
                "ssh_hostname": "10.0.0.1",
                "services": [{{"name": "glm", "model": "glm47", "port": 8000,
                              "jinja": {word}}}],
            }}),
        ]
    """)
    assert message == (f"{inv}, line 6: could not be loaded: NameError: name '{word}' is not defined "
                       f"(Python spells it {spelling})")


@pytest.mark.parametrize("text, expected", [
    ("rigs = [\n    ('r1', {'port': 8000,}\n]\n", "line 3: could not be loaded: SyntaxError: closing parenthesis "
                                                "']' does not match opening parenthesis '(' on line 2"),
    ("rigs = ['r1']\n  office = ['r2']\n", "line 2: could not be loaded: IndentationError: unexpected indent"),
    ("rigs = [('r1', {'jinja': enabled})]\n", "line 1: could not be loaded: NameError: name 'enabled' is not defined"),
    # the innermost line of the file, in a helper it defines or where it calls other code
    ("def _port(n):\n    return 8000 + n\n\nrigs = [('r1', {'port': _port('1')})]\n",
     "line 2: could not be loaded: TypeError: unsupported operand type(s) for +: 'int' and 'str'"),
    ("import json\n\nrigs = json.loads('{')\n",
     "line 3: could not be loaded: JSONDecodeError: Expecting property name enclosed in double quotes: "
     "line 1 column 2 (char 1)"),
])
def test_a_load_error_names_the_line_in_the_file(tmp_path, text, expected):
    inv, message = error_of(tmp_path, text)
    assert message == f"{inv}, {expected}"


def group_data_error(tmp_path: Path, text: str, name: str = "garage.py") -> tuple[Path, str]:
    (tmp_path / "group_data").mkdir()
    file = tmp_path / "group_data" / name
    file.write_text(textwrap.dedent(text))
    (tmp_path / "rigs.py").write_text("garage = ['r1']\n")
    with pytest.raises(InventoryError) as exc:
        load_inventory(tmp_path / "rigs.py", cwd=tmp_path)
    return file, str(exc.value)


@pytest.mark.parametrize("text, expected", [
    ('build_ref = "b1"\nverify_max_tokens = null\n',
     "line 2: could not be loaded: NameError: name 'null' is not defined (Python spells it None)"),
    ('{\n  "build_ref": "b1",\n  "power_persistence_mode": true\n}\n',  # JSON in a .py file
     "line 3: could not be loaded: NameError: name 'true' is not defined (Python spells it True)"),
    ('build_ref: b1\n', "line 1: build_ref: b1 is an annotation, not an assignment: expected build_ref = VALUE "
                         "(YAML's key: value sets nothing in Python)"),  # YAML: pyinfra would read no key
    ('build_ref = "b1"\nbuild_jobs = 8 / 0\n', "line 2: could not be loaded: ZeroDivisionError: division by zero"),
    ('# garage defaults\n{"build_ref": "b1", "build_jobs": 8}\n',
     'line 2: a dict on its own is not group data: expected assignments, one per key, such as build_ref = "b7100" '
     '(each top-level name of a group data file is a key)'),
])
def test_a_group_data_file_error_names_the_file_and_the_line(tmp_path, text, expected):
    file, message = group_data_error(tmp_path, text)
    assert message == f"{file}, {expected}"


@pytest.mark.parametrize("text, expected", [
    ('__all__ = "build_ref"\nbuild_ref = "b1"\n',
     "__all__ is a string ('build_ref'): expected a list of the names of the file's keys, such as "
     '__all__ = ["build_ref"]'),
    ('__all__ = ["build_ref", 3]\nbuild_ref = "b1"\n',
     "__all__ is a list: expected a list of the names of the file's keys, such as __all__ = [\"build_ref\"]"),
    ('__all__ = ["build_ref", "build_jobs"]\nbuild_ref = "b1"\n',
     "__all__ names build_jobs, which the file does not define: expected only names the file assigns"),
])
def test_group_data_names_that_are_not_a_mapping_of_keys_are_refused(tmp_path, text, expected):
    file, message = group_data_error(tmp_path, text)
    assert message == f"{file}: {expected}"


@pytest.mark.parametrize("text, expected", [
    ("rigs = [\n    ('r1', {'ssh_hostname': '10.0.0.1', 'mmap': false}),\n]\n",
     "{inv}, line 2: could not be loaded: NameError: name 'false' is not defined (Python spells it False)"),
    ("rigs = []\n", "{inv}: " + NO_HOSTS + " (rigs is empty)"),
    ("rigs = {'r1': {'ssh_hostname': '10.0.0.1'}}\n",
     "{inv}: group rigs is a dict: expected a list of hosts, such as rigs = [('r1', {...})] " + NOT_A_GROUP),
])
def test_llamarig_check_reports_a_malformed_inventory_without_a_traceback(tmp_path, text, expected):
    inv = tmp_path / "rigs.py"
    inv.write_text(text)
    done = subprocess.run([sys.executable, "-m", "llamarig", "check", str(inv)], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 2  # cli.main's exit status for an InventoryError
    assert done.stderr == "llamarig: " + expected.replace("{inv}", str(inv)) + "\n"
    assert "Traceback" not in done.stderr and done.stdout == ""  # no "0 rig(s): data is valid"
