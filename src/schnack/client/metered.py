"""Whether the link to the server is metered (a mobile data plan), and so whether a call's data
saver goes on by itself.

The link is the network interface of the route to the server's address: ``ip -j route get ADDR``
(iproute2) names it; without ``ip``, a UDP socket connected to the address (which sends nothing)
shows the source address the kernel chose, and the interface holding that address is the one.

That interface is metered

1. as NetworkManager says, when it runs: ``nmcli -t -f GENERAL.METERED device show IFACE``, which
   is ``yes``, ``no``, ``yes (guessed)``, ``no (guessed)`` or ``unknown`` (the D-Bus names are
   ``yes``/``no``/``guess-yes``/``guess-no``/``unknown``; both are understood). NetworkManager
   guesses "yes" for mobile broadband and for Wi-Fi hotspots of phones, and users can set it per
   connection;
2. otherwise (no NetworkManager, or it does not know), if the interface is a cellular modem's:
   ``DEVTYPE=wwan`` in ``/sys/class/net/IFACE/uevent``, or the link type ARPHRD_RAWIP (519) that
   only modem drivers use, or ARPHRD_NONE (65534) on a hardware device (the MHI modems of
   laptops); tunnels (WireGuard, OpenVPN's tun) are ARPHRD_NONE too, but virtual, with no
   ``device`` under their sysfs directory, and are not counted.

The setting (per account, ``data-saver`` in its store): ``auto`` turns the data saver on for calls
over a metered link, ``on`` for every call, ``off`` for none.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import socket
import struct
import subprocess
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

SYS_NET = Path("/sys/class/net")
# ioctl(2) SIOCGIFADDR, linux/sockios.h: an interface's IPv4 address.
_SIOCGIFADDR = 0x8915
# linux/if_arp.h: cellular modems in raw IP mode, and links without a hardware header.
ARPHRD_RAWIP = 519
ARPHRD_NONE = 65534
# A tool that does not answer within this time is taken as absent.
TOOL_TIMEOUT = 3.0
SETTING = "data-saver"


class SaverMode(StrEnum):
    """The data saver setting: on metered links only, always, or never."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"


@dataclass(frozen=True)
class Link:
    """The interface the server is reached through, whether it is metered, and who said so."""

    interface: str | None
    metered: bool
    by: str

    def describe(self) -> str:
        if self.interface is None:
            return "no route to the server found"
        return f"metered link {self.interface}" if self.metered else f"link {self.interface} is not metered"


@dataclass(frozen=True)
class SaverChoice:
    """Whether a call starts with the data saver, and why (said in the call's summary)."""

    on: bool
    reason: str


def _run(tool: str, *args: str) -> str | None:
    """What ``tool`` prints, or None if it is not installed, fails or hangs."""
    path = shutil.which(tool)
    if path is None:
        return None
    try:
        done = subprocess.run([path, *args], capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False,
                              env={**os.environ, "LC_ALL": "C"})  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def route_interface(address: str) -> str | None:
    """The interface of the route to ``address`` (an IPv4 or IPv6 address), or None if there is none."""
    out = _run("ip", "-j", "route", "get", address)
    if out is not None:
        with contextlib.suppress(ValueError, TypeError, KeyError, IndexError):
            dev = json.loads(out)[0]["dev"]
            if isinstance(dev, str) and dev:
                return dev
    source = _source_address(address)
    return _interface_holding(source) if source is not None else None


def _source_address(address: str) -> str | None:
    """The local address the kernel would send from to ``address``: connecting a UDP socket
    picks the route and sends nothing."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((address, 9))
            return str(probe.getsockname()[0]).split("%")[0]
    except OSError:
        return None


def _interface_holding(address: str) -> str | None:
    ip = ipaddress.ip_address(address)
    if ip.version == 6:
        # /proc/net/if_inet6: address (32 hex digits), index, prefix length, scope, flags, name.
        with contextlib.suppress(OSError):
            for line in Path("/proc/net/if_inet6").read_text().splitlines():
                fields = line.split()
                if len(fields) == 6 and ipaddress.ip_address(int(fields[0], 16)) == ip:
                    return fields[5]
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            try:
                # struct ifreq: the name (16 bytes), then a struct sockaddr_in whose address is at offset 4.
                answer = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue  # no IPv4 address on it
            if socket.inet_ntoa(answer[20:24]) == address:
                return name
    return None


def networkmanager_metered(interface: str) -> bool | None:
    """NetworkManager's metered state of ``interface``; None when it does not run or does not know."""
    out = _run("nmcli", "-t", "-f", "GENERAL.METERED", "device", "show", interface)
    if out is None:
        return None
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "GENERAL.METERED":
            word = value.strip().lower()
            if word in ("yes", "guess-yes", "yes (guessed)"):
                return True
            if word in ("no", "guess-no", "no (guessed)"):
                return False
    return None


def cellular(interface: str, sys_net: Path = SYS_NET) -> bool:
    """Whether ``interface`` is a cellular modem's, from sysfs."""
    base = sys_net / interface
    with contextlib.suppress(OSError):
        if "DEVTYPE=wwan" in (base / "uevent").read_text().splitlines():
            return True
    try:
        kind = int((base / "type").read_text().strip())
    except (OSError, ValueError):
        return False
    return kind == ARPHRD_RAWIP or (kind == ARPHRD_NONE and (base / "device").exists())


def link_to(address: str, sys_net: Path = SYS_NET) -> Link:
    """The link to ``address`` and whether it is metered (see the module's description)."""
    interface = route_interface(address)
    if interface is None:
        return Link(None, False, "route")
    said = networkmanager_metered(interface)
    if said is not None:
        return Link(interface, said, "NetworkManager")
    return Link(interface, cellular(interface, sys_net), "sysfs")


def choose(mode: SaverMode, server_address: str | None, sys_net: Path = SYS_NET) -> SaverChoice:
    """Whether a call starts with the data saver under ``mode``, for a server at ``server_address``."""
    if mode is not SaverMode.AUTO:
        return SaverChoice(mode is SaverMode.ON, f"the setting is {mode}")
    if server_address is None:
        return SaverChoice(False, "not connected, the link is unknown")
    link = link_to(server_address, sys_net)
    return SaverChoice(link.metered, link.describe())


def parse_mode(value: str | None) -> SaverMode:
    """The stored setting; anything unknown (or never set) is ``auto``."""
    try:
        return SaverMode(value) if value is not None else SaverMode.AUTO
    except ValueError:
        return SaverMode.AUTO
