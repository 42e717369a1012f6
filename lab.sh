#!/bin/sh
# xfrmctl's two entry points on a fresh Debian 12 machine (as root):
#   ./lab.sh demo   install everything, then a real IPsec tunnel between two hosts in the lab
#   ./lab.sh test   install everything, then lint, unit tests and the real-kernel lab suite
# Also: ./lab.sh shell (root shell in the lab guest), ./lab.sh unit, ./lab.sh lint, ./lab.sh lab,
#   ./lab.sh bench [--n N]   xfrmctl side by side with strongSwan in the guest (bench/tunnels.py)
set -eu
cd "$(dirname "$0")"
action=${1:-help}
[ $# -gt 0 ] && shift

lint() {
    .venv/bin/ruff check xfrmctl tests integration bench scripts
    .venv/bin/ruff format --check xfrmctl tests integration bench scripts
    .venv/bin/mypy
    # Ansible collection (ansible/): playbook syntax, ansible-lint (production profile, offline),
    # and the Vagrantfile when vagrant is installed.
    (cd ansible && ../.venv/bin/ansible-playbook --syntax-check -i inventory/example.yml site.yml)
    (cd ansible && ../.venv/bin/ansible-lint -q)
    if command -v vagrant >/dev/null 2>&1; then VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_DOTFILE_PATH="${TMPDIR:-/tmp}/xfrmctl-vagrant" vagrant validate --ignore-provider; fi
}
unit() { .venv/bin/python -m pytest -q -n auto tests "$@"; }  # one worker per CPU
slow_unit() { export XFRMCTL_SLOW_TESTS=1; unit --junitxml=lab-out/unit.xml; }
timings=""
timed() {  # timed PHASE CMD...: run CMD with errexit in a subshell and note its wall time
    phase=$1
    shift
    t0=$(date +%s)
    set +e
    (
        set -e
        "$@"
    )
    rc=$?
    set -e
    timings="$timings $phase $(($(date +%s) - t0)),"
    if [ "$rc" != 0 ]; then
        echo "phases (s):$timings failed in $phase" >&2
        exit "$rc"
    fi
}
lab() { .venv/bin/python integration/lab.py pytest "$@"; }

case "$action" in
    demo) scripts/setup.sh; exec .venv/bin/python integration/lab.py exec -- .venv/bin/python integration/demo.py "$@" ;;
    test)
        began=$(date +%s)
        timed setup scripts/setup.sh
        mkdir -p lab-out
        rm -f lab-out/unit.xml lab-out/lab.xml
        timed lint lint
        timed unit slow_unit
        timed lab lab -q --junitxml="$PWD/lab-out/lab.xml" "$@"
        echo "phases (s):$timings total $(($(date +%s) - began))"
        .venv/bin/python scripts/summary.py lab-out/unit.xml lab-out/lab.xml ;;
    unit) scripts/setup.sh; unit "$@" ;;
    lint) scripts/setup.sh; lint ;;
    lab) scripts/setup.sh; lab "$@" ;;
    bench) scripts/setup.sh; exec .venv/bin/python integration/lab.py exec -- .venv/bin/python bench/tunnels.py "$@" ;;
    shell) scripts/setup.sh; exec .venv/bin/python integration/lab.py shell ;;
    *) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; [ "$action" = help ] ;;
esac
