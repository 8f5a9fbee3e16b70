"""Metered links (metered.py): which interface carries the route to the server, whether it is
metered, and whether a call's data saver goes on by itself.

This machine has neither a cellular modem nor NetworkManager, so those cases run against what
the tools would show there: a sysfs tree written into tmp_path the way the kernel lays it out
for a wwan modem, an MHI modem, a WireGuard tunnel and ethernet, and small shell scripts named
``ip`` and ``nmcli``, first on PATH, printing what iproute2 and NetworkManager's nmcli print on
such machines (the scripts are test peers standing in for tools that are absent here). The last
tests run on this machine's own loopback and ethernet, with its real ``ip``: not metered.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from schnack.client.metered import (
    Link,
    SaverChoice,
    SaverMode,
    cellular,
    choose,
    link_to,
    networkmanager_metered,
    parse_mode,
    route_interface,
)

SYSTEM_PATH = os.environ.get("PATH", os.defpath)
# `ip -j route get ADDR` as iproute2 prints it, for a server reached over each interface.
ROUTES = {
    "10.64.0.1": '[{"dst":"10.64.0.1","dev":"wwan0","prefsrc":"10.64.3.2","flags":[],"uid":1000,"cache":[]}]',
    "10.65.0.1": '[{"dst":"10.65.0.1","dev":"mhi_hwip0","prefsrc":"10.65.3.2","flags":[],"uid":1000,"cache":[]}]',
    "10.66.0.1": '[{"dst":"10.66.0.1","dev":"wg0","prefsrc":"10.66.3.2","flags":[],"uid":1000,"cache":[]}]',
    "192.168.1.10": '[{"dst":"192.168.1.10","dev":"eth0","prefsrc":"192.168.1.5","flags":[],"uid":1000,"cache":[]}]',
    "2001:db8::10": '[{"dst":"2001:db8::10","from":"::","gateway":"fe80::1","dev":"wlan0","protocol":"ra",'
                    '"prefsrc":"2001:db8::5","metric":600,"flags":[],"uid":1000,"cache":[]}]',
}


def sysfs(root: Path) -> Path:
    """/sys/class/net as the kernel shows it for these interfaces."""
    net = root / "sys" / "class" / "net"
    links = {
        # A USB modem on cdc_mbim / qmi_wwan: DEVTYPE=wwan, and raw IP.
        "wwan0": ("DEVTYPE=wwan\nINTERFACE=wwan0\nIFINDEX=5\n", "519", True),
        # A laptop's PCIe modem on mhi_net: no DEVTYPE, ARPHRD_NONE, a hardware device.
        "mhi_hwip0": ("INTERFACE=mhi_hwip0\nIFINDEX=6\n", "65534", True),
        # WireGuard: ARPHRD_NONE too, but virtual.
        "wg0": ("DEVTYPE=wireguard\nINTERFACE=wg0\nIFINDEX=7\n", "65534", False),
        "eth0": ("INTERFACE=eth0\nIFINDEX=2\n", "1", True),
        "wlan0": ("DEVTYPE=wlan\nINTERFACE=wlan0\nIFINDEX=3\n", "1", True),
    }
    for name, (uevent, kind, hardware) in links.items():
        base = net / name
        base.mkdir(parents=True)
        (base / "uevent").write_text(uevent)
        (base / "type").write_text(kind + "\n")
        if hardware:
            (base / "device").mkdir()
    return net


def tool(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


def fake_ip(bin_dir: Path) -> None:
    cases = "".join(f"  {addr}) echo '{out}' ;;\n" for addr, out in ROUTES.items())
    tool(bin_dir, "ip", f'[ "$1 $2 $3" = "-j route get" ] || exit 1\ncase "$4" in\n{cases}'
                        '  *) echo "RTNETLINK answers: Network is unreachable" >&2; exit 2 ;;\nesac\n')  # fmt: skip


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory that is all of PATH: only the tools the test puts there exist."""
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", str(directory))
    return directory


def test_cellular_interfaces_from_sysfs(tmp_path: Path) -> None:
    net = sysfs(tmp_path)
    assert cellular("wwan0", net) and cellular("mhi_hwip0", net)
    assert not cellular("wg0", net) and not cellular("eth0", net) and not cellular("wlan0", net)
    assert not cellular("gone0", net)


def test_route_from_ip(bin_dir: Path) -> None:
    fake_ip(bin_dir)
    assert route_interface("10.64.0.1") == "wwan0"
    assert route_interface("2001:db8::10") == "wlan0"


def test_without_networkmanager_sysfs_decides(bin_dir: Path, tmp_path: Path) -> None:
    fake_ip(bin_dir)
    # nmcli installed, but NetworkManager not running: nmcli says so and exits 8.
    tool(bin_dir, "nmcli", 'echo "Error: NetworkManager is not running." >&2\nexit 8\n')
    net = sysfs(tmp_path)
    assert link_to("10.64.0.1", net) == Link("wwan0", True, "sysfs")
    assert link_to("10.65.0.1", net) == Link("mhi_hwip0", True, "sysfs")
    assert link_to("10.66.0.1", net) == Link("wg0", False, "sysfs")
    assert link_to("192.168.1.10", net) == Link("eth0", False, "sysfs")
    assert choose(SaverMode.AUTO, "10.64.0.1", net) == SaverChoice(True, "metered link wwan0")
    assert choose(SaverMode.AUTO, "192.168.1.10", net) == SaverChoice(False, "link eth0 is not metered")


def test_networkmanager_decides(bin_dir: Path, tmp_path: Path) -> None:
    fake_ip(bin_dir)
    # nmcli's terse output; a Wi-Fi hotspot of a phone is guessed metered, the modem is unknown
    # to it (not managed), and a value may come in D-Bus spelling.
    answers = {"wlan0": "yes (guessed)", "eth0": "no", "wwan0": "unknown", "mhi_hwip0": "guess-no"}
    cases = "".join(f"  {dev}) echo 'GENERAL.METERED:{value}' ;;\n" for dev, value in answers.items())
    tool(bin_dir, "nmcli", '[ "$1 $2 $3 $4 $5" = "-t -f GENERAL.METERED device show" ] || exit 2\n'
                           f'case "$6" in\n{cases}  *) echo "Error: Device \'$6\' not found." >&2; exit 10 ;;\nesac\n')  # fmt: skip
    net = sysfs(tmp_path)
    assert networkmanager_metered("wlan0") is True
    assert networkmanager_metered("eth0") is False
    assert networkmanager_metered("wwan0") is None
    assert networkmanager_metered("wg0") is None
    assert link_to("2001:db8::10", net) == Link("wlan0", True, "NetworkManager")
    assert link_to("192.168.1.10", net) == Link("eth0", False, "NetworkManager")
    # NetworkManager does not know: the modem still counts, from sysfs.
    assert link_to("10.64.0.1", net) == Link("wwan0", True, "sysfs")
    # NetworkManager's word goes over the guess from the link type.
    assert link_to("10.65.0.1", net) == Link("mhi_hwip0", False, "NetworkManager")
    assert choose(SaverMode.AUTO, "2001:db8::10", net) == SaverChoice(True, "metered link wlan0")


def test_modes(bin_dir: Path, tmp_path: Path) -> None:
    fake_ip(bin_dir)
    net = sysfs(tmp_path)
    assert choose(SaverMode.ON, "192.168.1.10", net) == SaverChoice(True, "the setting is on")
    assert choose(SaverMode.OFF, "10.64.0.1", net) == SaverChoice(False, "the setting is off")
    assert choose(SaverMode.AUTO, None, net) == SaverChoice(False, "not connected, the link is unknown")
    assert [parse_mode(v) for v in (None, "on", "off", "auto", "sometimes")] == [
        SaverMode.AUTO, SaverMode.ON, SaverMode.OFF, SaverMode.AUTO, SaverMode.AUTO,
    ]  # fmt: skip


def test_without_ip_the_source_address_decides(bin_dir: Path) -> None:
    """No iproute2 on PATH: a UDP socket's source address names the interface (this machine's)."""
    assert route_interface("127.0.0.1") == "lo"
    assert route_interface("not an address") is None
    own = own_address()
    if own is not None:
        address, interface = own
        assert route_interface(address) == interface


def own_address() -> tuple[str, str] | None:
    """A non-loopback IPv4 address of this machine and its interface, as the real ``ip`` shows them."""
    ip = shutil.which("ip", path=SYSTEM_PATH)
    if ip is None:
        return None
    out = subprocess.run([ip, "-j", "-4", "addr", "show"], capture_output=True, text=True, check=True).stdout
    for link in json.loads(out):
        for info in link.get("addr_info", []):
            if link["ifname"] != "lo" and info.get("local"):
                return str(info["local"]), str(link["ifname"])
    return None


def test_this_machine_is_not_metered() -> None:
    """The real ``ip`` on this machine (no NetworkManager, no modem): loopback and the way out."""
    assert link_to("127.0.0.1") == Link("lo", False, "sysfs" if shutil.which("nmcli") is None else "NetworkManager")
    assert choose(SaverMode.AUTO, "127.0.0.1") == SaverChoice(False, "link lo is not metered")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            # A documentation address: only the route to it matters, nothing is sent.
            probe.connect(("192.0.2.1", 9))
    except OSError:
        return  # no route out of this machine at all
    link = link_to("192.0.2.1")
    assert link.interface not in (None, "lo") and not link.metered
