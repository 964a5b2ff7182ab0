"""The systemctl stand-in's wire format: a JSON request line, a length-prefixed answer."""

from __future__ import annotations

import json
import subprocess

from hactl.lab import standins
from hactl.lab.standins.systemctl import decode_reply, encode_reply, encode_request


def test_request_is_one_json_line_the_supervisor_reads() -> None:
    argv = ["show", "-p", "Id", 'we"ird\\ünit\n.service']
    line = encode_request(argv)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"argv": argv}


def test_reply_round_trips_and_waits_for_all_of_it() -> None:
    out, err = "Id=kubelet.service\nActiveState=active\n", "Grüße\n"
    data = encode_reply(3, out, err)
    assert decode_reply(data) == (3, out, err)
    for cut in range(len(data)):
        assert decode_reply(data[:cut]) is None, cut
    assert decode_reply(encode_reply(0, "", "")) == (0, "", "")


def test_an_old_supervisor_json_answer_is_still_understood() -> None:
    old = json.dumps({"rc": 1, "out": "", "err": "x\n"}).encode() + b"\n"
    assert decode_reply(old) == (1, "", "x\n")


def test_shims(tmp_path: object) -> None:
    fast = standins.shim_script("systemctl", "hactl.lab.standins.systemctl", "/src")
    assert fast == '#!/bin/sh\nexec /usr/bin/python3 -S -E /src/hactl/lab/standins/systemctl.py "$@"\n'
    slow = standins.shim_script("kubeadm", "hactl.lab.standins.kubeadm", "/src")
    assert "PYTHONPATH=/src exec /usr/bin/python3 -m hactl.lab.standins.kubeadm" in slow


def test_the_script_shim_runs_without_site_or_package() -> None:
    """As the shim runs it (Debian's python3 -S -E, the file as a script): outside a lab node it
    fails like the real systemctl without systemd, and it never imports json/socket/re."""
    path = standins.__file__.replace("__init__.py", "systemctl.py")
    proc = subprocess.run(["/usr/bin/python3", "-S", "-E", path, "is-active", "x"],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert proc.returncode == 1 and "has not been booted with systemd" in proc.stderr
    proc = subprocess.run(["/usr/bin/python3", "-S", "-E", "-X", "importtime", path, "--version"],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.startswith("systemd 252")
    imported = {line.rpartition("|")[2].strip() for line in proc.stderr.splitlines()}
    assert "_socket" in imported and "_json" in imported
    assert imported.isdisjoint({"json", "socket", "re", "enum"}), sorted(imported)
