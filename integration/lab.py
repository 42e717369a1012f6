#!/usr/bin/env python3
"""Real-kernel lab runner: boot Debian's distro kernel in a QEMU guest and run a command in it.

The host kernel may lack ESP/AH entirely, so data-plane tests run inside a virtme-ng guest that
shares this machine's filesystem (read-only root, writable /tmp and --rwdir folders). One boot
runs a whole command or test session, because a boot costs 15-30 s under software emulation.

Usage:
  integration/lab.py exec [--memory 2G] [--cpus 2] -- CMD [ARGS...]
  integration/lab.py pytest [PYTEST ARGS...]
  integration/lab.py shell
  integration/lab.py install      # only install what the lab needs
  integration/lab.py direct -- CMD  # run on this host as-is, when its kernel already has ESP

Environment: XFRMCTL_LAB_ACCEL=kvm|tcg overrides the accelerator choice; XFRMCTL_LAB_OUT sets
the writable output folder (default: lab-out/ in the repository); XFRMCTL_LAB_STALL is how many
seconds a suite may go without a test starting or finishing before its guest is stopped and
booted once more (guest_console.py).
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import fcntl
import glob
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import guest_console  # beside this file; stdlib only

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"
DEBIAN_PACKAGES = {
    # command or file that proves the package is there -> package
    "qemu-system-x86_64": "qemu-system-x86",
    "busybox": "busybox-static",
    "ip": "iproute2",
    "tcpdump": "tcpdump",
    "ping": "iputils-ping",
    "nft": "nftables",
    "conntrack": "conntrack",  # NAT mapping changes under a live tunnel (test_nat_options.py)
    "iperf3": "iperf3",  # ESP throughput of both stacks (bench/tunnels.py)
    "tshark": "tshark",  # decrypts a capture with `xfrmctl keys` (test_xfrmctl_tunnel.py)
    "openssl": "openssl",  # the OCSP responder of test_revocation_strongswan.py
    # strongSwan as an interop peer (integration/strongswan.py)
    "charon-systemd": "charon-systemd",
    "swanctl": "strongswan-swanctl",
    "/usr/lib/ipsec/plugins/libstrongswan-openssl.so": "libstrongswan-standard-plugins",
    # Libreswan's runtime libraries and NSS tools (integration/libreswan.py); the libreswan
    # package itself conflicts with strongSwan's, so install_libreswan() unpacks it instead.
    "certutil": "libnss3-tools",
    "/usr/lib/x86_64-linux-gnu/libunbound.so.8": "libunbound8",
    "/usr/lib/x86_64-linux-gnu/libldns.so.3": "libldns3",
    "/usr/lib/x86_64-linux-gnu/libevent_core-2.1.so.7": "libevent-core-2.1-7",
    "/usr/lib/x86_64-linux-gnu/libevent_pthreads-2.1.so.7": "libevent-pthreads-2.1-7",
    "/usr/lib/x86_64-linux-gnu/libcurl-nss.so.4": "libcurl3-nss",
    "/usr/lib/x86_64-linux-gnu/liblber-2.5.so.0": "libldap-2.5-0",
    "/usr/lib/x86_64-linux-gnu/libcap-ng.so.0": "libcap-ng0",
}
KERNEL_PACKAGE = "linux-image-amd64"
# Libreswan unpacked from its .deb (not installed: it Conflicts with strongswan-charon). Not
# under /var: the guest mounts fresh tmpfs on /var/cache, /var/lib and /var/tmp.
LIBRESWAN_PACKAGE = "libreswan"
LIBRESWAN_ROOT = Path(os.environ.get("XFRMCTL_LIBRESWAN_ROOT", "/opt/xfrmctl-lab/libreswan"))
# One guest at a time on this machine, whichever checkout boots it: two TCG guests on two cores
# make both crawl until the tests' start-up limits fire.
# netdevsim (IPsec crypto offload emulation, issue 10): Debian's kernel does not build it, so
# install_netdevsim() builds it once per guest kernel release into NETDEVSIM_ROOT/<release>/.
NETDEVSIM_ROOT = Path(os.environ.get("XFRMCTL_NETDEVSIM_ROOT", "/opt/xfrmctl-lab/netdevsim"))
GUEST_LOCK = Path(os.environ.get("XFRMCTL_LAB_LOCK", "/run/lock/xfrmctl-lab.lock"))
# A suite run whose guest prints nothing and starts or finishes no test for this long has
# stalled (guest_console.py): well past pytest-timeout's 600 s, which fails a stuck test first.
STALL_AFTER_S = float(os.environ.get("XFRMCTL_LAB_STALL", guest_console.STALL_DEFAULT_S))
STALLED = 124  # timeout(1)'s status for a command it stopped


def log(msg: str) -> None:
    print(f"lab: {msg}", file=sys.stderr, flush=True)


def fail(msg: str, code: int = 2) -> NoReturn:
    log(f"error: {msg}")
    raise SystemExit(code)


def distro_kernel() -> Path | None:
    """Newest Debian distro kernel image in /boot (one with modules for ESP, AH, GCM)."""
    images = []
    for path in glob.glob("/boot/vmlinuz-*"):
        release = path.removeprefix("/boot/vmlinuz-")
        if Path(f"/lib/modules/{release}/kernel/net/ipv4").is_dir():
            images.append(Path(path))
    return sorted(images)[-1] if images else None


def vng_binary() -> str | None:
    local = VENV / "bin" / "vng"
    if local.exists():
        return str(local)
    return shutil.which("vng")


def install() -> None:
    """Install the guest kernel, QEMU and tools when missing (idempotent, needs root)."""
    missing = sorted(
        {
            pkg
            for cmd, pkg in DEBIAN_PACKAGES.items()
            if not (Path(cmd).exists() if cmd.startswith("/") else shutil.which(cmd))
        }
    )
    if distro_kernel() is None:
        missing.append(KERNEL_PACKAGE)
    if missing:
        if os.geteuid() != 0:
            fail(f"missing Debian packages {' '.join(missing)}; run as root to install them")
        log(f"installing {' '.join(missing)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", INITRD="No")
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        # Installing charon-systemd would start a strongSwan service on this host: forbid
        # service starts for the duration (invoke-rc.d honours policy-rc.d exit 101).
        policy = Path("/usr/sbin/policy-rc.d")
        ours = not policy.exists()
        if ours:
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
        try:
            subprocess.run(
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                check=True,
                env=env,
            )
        finally:
            if ours:
                policy.unlink(missing_ok=True)
    install_libreswan()
    install_netdevsim()
    if vng_binary() is None:
        pip = VENV / "bin" / "pip"
        if not pip.exists():
            fail(f"no virtualenv at {VENV}: run scripts/setup.sh first")
        log("installing virtme-ng into the virtualenv")
        subprocess.run([str(pip), "install", "-q", "virtme-ng"], check=True)


def install_libreswan() -> None:
    """Unpack Debian's libreswan into LIBRESWAN_ROOT once; its libraries come from apt above."""
    if (LIBRESWAN_ROOT / "usr" / "libexec" / "ipsec" / "pluto").exists():
        return
    if os.geteuid() != 0:
        fail(f"Libreswan is not unpacked in {LIBRESWAN_ROOT}; run as root to unpack it")
    log(f"unpacking {LIBRESWAN_PACKAGE} into {LIBRESWAN_ROOT}")
    LIBRESWAN_ROOT.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libreswan-", dir=LIBRESWAN_ROOT.parent))
    try:
        download = subprocess.run(
            ["apt-get", "download", "-q", LIBRESWAN_PACKAGE], cwd=staging, capture_output=True
        )
        if download.returncode != 0:  # stale lists on a fresh machine: update once and retry
            subprocess.run(["apt-get", "update", "-q"], check=True)
            subprocess.run(
                ["apt-get", "download", "-q", LIBRESWAN_PACKAGE], cwd=staging, check=True
            )
        (deb,) = staging.glob(f"{LIBRESWAN_PACKAGE}_*.deb")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(staging / "root")], check=True)
        shutil.rmtree(LIBRESWAN_ROOT, ignore_errors=True)  # an old tree without pluto
        (staging / "root").rename(LIBRESWAN_ROOT)  # atomic: a half-unpacked tree never counts
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def install_netdevsim() -> None:
    """Build netdevsim out of tree for the guest kernel once (CONFIG_NETDEVSIM is not set in
    Debian's config): its folder from Debian's matching linux-source, against the matching
    headers. The guest loads the unsigned module (signatures are not enforced)."""
    kernel = distro_kernel()
    if kernel is None:
        return
    release = kernel.name.removeprefix("vmlinuz-")
    ko = NETDEVSIM_ROOT / release / "netdevsim.ko"
    if ko.exists():
        return
    if os.geteuid() != 0:
        fail(f"netdevsim is not built in {ko.parent}; run as root to build it")
    source = _netdevsim_packages(release)
    log(f"building netdevsim for {release} into {ko.parent}")
    NETDEVSIM_ROOT.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="netdevsim-", dir=NETDEVSIM_ROOT))
    try:
        top = source.name.removesuffix(".tar.xz")
        subprocess.run(
            ["tar", "-xJf", str(source), "-C", str(staging), "--wildcards",
             f"{top}/drivers/net/netdevsim/*"],
            check=True,
        )  # fmt: skip
        folder = staging / top / "drivers" / "net" / "netdevsim"
        build = subprocess.run(
            ["make", "-C", f"/lib/modules/{release}/build", f"M={folder}",
             "CONFIG_NETDEVSIM=m", "modules"],
            capture_output=True,
            text=True,
        )  # fmt: skip
        if build.returncode != 0:
            fail(f"building netdevsim for {release} failed:\n{build.stdout}{build.stderr}")
        (folder / "netdevsim.ko").rename(staging / "netdevsim.ko")
        shutil.rmtree(staging / top)
        staging.chmod(0o755)
        shutil.rmtree(ko.parent, ignore_errors=True)
        staging.rename(ko.parent)  # atomic: a half-built folder never counts
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _netdevsim_packages(release: str) -> Path:
    """Install the headers and source of exactly the guest kernel's package version; the
    source tarball's path. Fails naming the packages when the registry lacks that version."""
    image = f"linux-image-{release}"
    query = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", image], capture_output=True, text=True
    )
    if query.returncode != 0 or not query.stdout:
        fail(f"cannot build netdevsim: {image} is not installed ({query.stderr.strip()})")
    version = query.stdout.strip()
    series = ".".join(release.split(".")[:2])  # 6.1.0-57-amd64 -> 6.1
    source = Path(f"/usr/src/linux-source-{series}.tar.xz")
    wanted = [f"linux-headers-{release}={version}", f"linux-source-{series}={version}", "make"]
    if Path(f"/lib/modules/{release}/build/Makefile").exists() and source.exists():
        return source
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *wanted]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:  # stale lists on a fresh machine: update once and retry
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not source.exists():
        fail(
            f"cannot build netdevsim for {release}: the registry has no "
            f"{' / '.join(wanted[:2])}:\n{proc.stderr.strip()}"
        )
    return source


def host_has_esp() -> bool:
    """True when this host's kernel can install ESP SAs (then no VM is needed)."""
    from netlab import esp_unavailable  # beside this file; stdlib only

    return esp_unavailable() is None


def kvm_usable() -> bool:
    """KVM only when the CPU really offers hardware virtualisation; /dev/kvm alone can lie."""
    forced = os.environ.get("XFRMCTL_LAB_ACCEL", "").lower()
    if forced in ("kvm", "tcg"):
        return forced == "kvm"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f" {flag}" in flags for flag in ("vmx", "svm"))


def cached_trees() -> list[Path]:
    """Host folders the guest reads through a caching 9p mount of their own.

    virtme-ng mounts the guest's root with no 9p caching, so every stat and read of a Python
    module is a round trip to QEMU: a bare `python -c pass` took 2 s and importing the daemon
    10 s. This checkout (with .venv), the interpreter's own tree and /usr are read-only for
    the whole run, so a second export of each, mounted with cache=loose over the same path,
    is safe and makes Python starts about three times faster. lab-out stays uncached.
    """
    python = Path(os.path.realpath(sys.base_prefix))
    trees = [Path("/usr"), REPO]
    if not python.is_relative_to("/usr") and not python.is_relative_to(REPO):
        trees.append(python)
    return [t for t in trees if t.is_dir() and "," not in str(t)]  # QEMU splits on commas


def virtfs_options(trees: list[Path]) -> list[str]:
    exports = " ".join(
        f"-virtfs local,path={tree},mount_tag=xlc{i},security_model=none,readonly=on"
        for i, tree in enumerate(trees)
    )
    return [f"--qemu-opts={exports}"] if exports else []


def cache_mounts(trees: list[Path], out: Path) -> list[str]:
    """Guest commands mounting each cached export over its path (see cached_trees). A
    failure leaves the uncached view in place; lab-out is bound back if a tree hid it."""
    opts = "ro,trans=virtio,version=9p2000.L,msize=524288,cache=loose"
    keep = "/run/xfrmctl-lab-out"
    lines = [f"mkdir -p {keep} && mount --bind {shlex.quote(str(out))} {keep}"]
    for i, tree in enumerate(trees):
        where = f"/run/xfrmctl-lab-cache/{i}"
        path = shlex.quote(str(tree))
        lines.append(
            f"mkdir -p {where} && mount -t 9p -o {opts} xlc{i} {where} && "
            f"mount --bind {where} {path} || echo 'lab: no cached view of {tree}' >&2"
        )
    if any(out.is_relative_to(t) for t in trees):
        lines.append(f"mount --bind {keep} {shlex.quote(str(out))}")
    return lines


def static_editable_path() -> list[str]:
    """Guest commands putting a plain path in place of setuptools' editable finder.

    `pip install -e` writes a .pth that imports a finder module (with pathlib and
    importlib.util) at every interpreter start: 17 ms here, half a second under TCG, paid by
    each of the hundreds of daemons, CLI calls and Ansible modules a lab run starts. In the
    guest only, a file naming the checkout is bound over that .pth: the same modules are
    found, the host's install is untouched.
    """
    lines = []
    for pth in sorted(VENV.glob("lib/python3*/site-packages/__editable__.xfrmctl-*.pth")):
        if not pth.read_text().startswith("import "):
            continue  # already a plain path (compat mode)
        plain = f"/run/xfrmctl-lab-{pth.name}"
        lines.append(
            f"echo {shlex.quote(str(REPO))} > {plain} && "
            f"mount --bind {plain} {shlex.quote(str(pth))} || "
            f"echo 'lab: kept the editable finder {pth.name}' >&2"
        )
    return lines


def guest_script(out: Path, command: list[str], interactive: bool = False) -> Path:
    """Write the script the guest runs: we cannot pass long --exec strings (the guest hangs)."""
    venv_bin = VENV / "bin"
    lines = [
        "#!/bin/sh",
        f"touch {shlex.quote(str(out / f'guest-started-{os.getpid()}'))}",
        *cache_mounts(cached_trees(), out),
        *static_editable_path(),
        f"cd {shlex.quote(str(REPO))}",
        f"export PATH={shlex.quote(str(venv_bin))}:/usr/local/sbin:/usr/local/bin:"
        "/usr/sbin:/usr/bin:/sbin:/bin",
        "export PYTHONDONTWRITEBYTECODE=1 XFRMCTL_IN_LAB=1",
        f"export XFRMCTL_LAB_OUT={shlex.quote(str(out))}",
        "export HYPOTHESIS_STORAGE_DIRECTORY=/tmp/hypothesis",
        f"export XFRMCTL_LAB_STALL={STALL_AFTER_S:.0f}",
        # The root filesystem is the host's, read-only: load the modules tests rely on up front.
        "for m in xfrm_user esp4 esp6 ah4 ah6 xfrm4_tunnel xfrm6_tunnel tunnel4 "
        "xfrm_interface veth ipcomp ipcomp6 psample; do modprobe -q $m 2>/dev/null; done",
        f"insmod {shlex.quote(str(NETDEVSIM_ROOT))}/$(uname -r)/netdevsim.ko 2>/dev/null",
        "sysctl -qw net.ipv4.ip_forward=0",
    ]
    lines.append("exec /bin/sh -i" if interactive else "exec " + shlex.join(command))
    script = out / f"guest-cmd-{os.getpid()}.sh"  # one per run: runs may overlap
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o755)
    return script


@contextlib.contextmanager
def one_guest_at_a_time() -> Iterator[None]:
    """Hold the machine-wide guest lock; wait (saying so) while another guest runs."""
    GUEST_LOCK.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(GUEST_LOCK, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another lab guest is running; waiting for it to finish ({GUEST_LOCK})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def compile_bytecode() -> None:
    """Byte-compile the checkout here first: the guest's root is read-only, so without .pyc
    files every Python process in it compiles xfrmctl from source again (seconds under TCG)."""
    for folder in ("xfrmctl", "integration"):
        compileall.compile_dir(REPO / folder, quiet=1)


def run_in_guest(
    command: list[str],
    memory: str,
    cpus: int,
    interactive: bool = False,
    stall_after: float | None = None,
) -> int:
    """Boot a guest for `command`. With `stall_after`, a guest whose tests stop moving for that
    long (guest_console.py) is stopped and booted once more: a stalled guest is this machine's
    emulation failing, which one more boot has always cleared, not a test's verdict."""
    install()
    compile_bytecode()
    import lab_keys  # needs the venv's cryptography, which `install` may be setting up

    lab_keys.prepare(Path(os.environ.get("XFRMCTL_LAB_OUT", REPO / "lab-out")).resolve())
    with one_guest_at_a_time():
        return boot_twice_if_stalled(lambda: _boot(command, memory, cpus, interactive, stall_after))


def boot_twice_if_stalled(boot: Callable[[], int]) -> int:
    returncode = boot()
    if returncode == STALLED:
        log("the guest stalled (above: what was in flight); booting it once more")
        returncode = boot()
        if returncode == STALLED:
            log("the guest stalled again; giving up")
    return returncode


def _boot(
    command: list[str], memory: str, cpus: int, interactive: bool, stall_after: float | None
) -> int:
    kernel = distro_kernel()
    if kernel is None:
        fail(f"no Debian kernel with modules in /boot after installing {KERNEL_PACKAGE}")
    vng = vng_binary()
    if vng is None:
        fail("virtme-ng (vng) is not installed")
    out = Path(os.environ.get("XFRMCTL_LAB_OUT", REPO / "lab-out")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    script = guest_script(out, command, interactive)
    accel = kvm_usable()
    argv = [
        str(vng),
        "-r",
        str(kernel),
        "--force-9p",
        "--memory",
        memory,
        "--cpus",
        str(cpus),
        "--user",
        "root",
        "--rwdir",
        str(out),
    ]
    if not accel:
        argv.append("--disable-kvm")
    argv += virtfs_options(cached_trees())
    argv += ["--exec", str(script)]
    marker = out / f"guest-started-{os.getpid()}"
    marker.unlink(missing_ok=True)
    log(f"booting {kernel.name} ({'KVM' if accel else 'TCG, no hardware virtualisation'})")
    env = dict(os.environ)
    env["PATH"] = f"{VENV / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    if interactive:
        returncode, stalled = subprocess.run(argv, env=env).returncode, False
    else:
        returncode, stalled = guest_console.run(argv, env, out, stall_after)
    booted = marker.exists()
    marker.unlink(missing_ok=True)
    script.unlink(missing_ok=True)
    if stalled:
        return STALLED
    if not booted:
        log(
            f"the real-kernel guest did not boot (vng exit {returncode}); "
            "lab tests cannot run. Check that QEMU works: integration/lab.py exec -- true"
        )
        return returncode or 3
    return returncode


def parallel_args(pytest_args: list[str], cpus: int) -> list[str]:
    """pytest-xdist options: one worker more than the guest has CPUs for a suite run.
    Scenarios are separate namespaces, and under TCG each guest CPU is a host thread, so two
    run in about the time of one; with one worker per CPU a fifth of the CPU time stayed
    idle while scenarios waited on timers (conftest.py's "lab CPU" line), and a third worker
    fills most of it. A module whose module-scoped fixture serves all its cases stays on one worker
    (conftest.py's scheduler). A developer's single scenario (-k, or a ::node
    id) runs in-process, with no worker start-up; XFRMCTL_LAB_WORKERS or -n overrides."""
    if any(a == "-n" or a.startswith(("-n", "--numprocesses")) for a in pytest_args):
        return []
    selective = any(a == "-k" or "::" in a for a in pytest_args)
    workers = int(os.environ.get("XFRMCTL_LAB_WORKERS", "1" if selective else str(cpus + 1)))
    parallel = ["-n", str(workers), "--dist", "load", "--no-loadscope-reorder"]
    return parallel if workers > 1 else ["-p", "no:xdist"]


def report_args(pytest_args: list[str]) -> list[str]:
    """A suite run lists its slowest scenarios, so the CI log shows where the minutes go."""
    if any(a == "-k" or "::" in a or a.startswith("--durations") for a in pytest_args):
        return []
    return ["--durations=15"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--memory", default=os.environ.get("XFRMCTL_LAB_MEMORY", "2G"))
    parser.add_argument("--cpus", type=int, default=int(os.environ.get("XFRMCTL_LAB_CPUS", "2")))
    sub = parser.add_subparsers(dest="action", required=True)
    p_exec = sub.add_parser("exec", help="run a command as root in the guest")
    p_exec.add_argument("command", nargs=argparse.REMAINDER)
    p_pytest = sub.add_parser("pytest", help="run the integration suite in the guest")
    p_pytest.add_argument("args", nargs=argparse.REMAINDER)
    sub.add_parser("shell", help="interactive root shell in the guest")
    sub.add_parser("install", help="install QEMU, the guest kernel and tools")
    p_direct = sub.add_parser("direct", help="run on this host (its kernel must have ESP)")
    p_direct.add_argument("command", nargs=argparse.REMAINDER)
    args, extra = parser.parse_known_args(argv)
    if extra and args.action in ("exec", "pytest", "direct"):
        # argparse leaves options meant for the inner command (pytest -q, ...) unparsed.
        field = "args" if args.action == "pytest" else "command"
        setattr(args, field, extra + getattr(args, field))
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")

    if args.action == "install":
        install()
        return 0
    if args.action == "exec":
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            parser.error("exec needs a command")
        return run_in_guest(command, args.memory, args.cpus)
    if args.action == "pytest":
        pytest_args = args.args[1:] if args.args[:1] == ["--"] else args.args
        command = [
            str(VENV / "bin" / "python"),
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-c",
            str(REPO / "integration" / "pytest.ini"),
            "--rootdir",
            str(REPO),
            *parallel_args(pytest_args, args.cpus),
            *report_args(pytest_args),
            *pytest_args,
        ]
        if not any(Path(a.split("::")[0]).exists() for a in pytest_args):
            command.append(str(REPO / "integration"))
        return run_in_guest(command, args.memory, args.cpus, stall_after=STALL_AFTER_S)
    if args.action == "shell":
        return run_in_guest([], args.memory, args.cpus, interactive=True)
    if args.action == "direct":
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not host_has_esp():
            fail("this host's kernel cannot install ESP SAs; use 'exec' to run in the guest")
        return subprocess.run(command).returncode
    return 2


if __name__ == "__main__":
    sys.exit(main())
