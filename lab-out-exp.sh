#!/bin/sh
cd /work/main
export ANSIBLE_CONFIG=/work/main/ansible/ansible.cfg ANSIBLE_HOME=/tmp/ah ANSIBLE_LOCAL_TEMP=/tmp/ah/tmp ANSIBLE_REMOTE_TEMP=/tmp/ah/rt
t() { s=$(date +%s.%N); "$@" >/tmp/o 2>&1; e=$(date +%s.%N); echo "$(echo "$e - $s" | bc) s: $*"; tail -2 /tmp/o | cut -c1-150; }
t .venv/bin/python -c pass
t /usr/bin/python3 -c pass
t .venv/bin/python -c "import ansible.module_utils.basic"
t /usr/bin/python3 -c "import sys; sys.path.insert(0,'/work/main/.venv/lib/python3.11/site-packages'); import ansible.module_utils.basic"
t .venv/bin/ansible --version
cd ansible
for py in /work/main/.venv/bin/python /usr/bin/python3; do
for pipe in True False; do
t ../.venv/bin/ansible localhost -c local -e ansible_python_interpreter=$py -e ansible_pipelining=$pipe -m ansible.builtin.file -a "path=/tmp/x$pipe state=directory mode=0755"
done; done
t ../.venv/bin/ansible localhost -c local -e ansible_python_interpreter=/usr/bin/python3 -e ansible_pipelining=true -m ansible.builtin.ping
t ../.venv/bin/ansible localhost -c local -e ansible_python_interpreter=/usr/bin/python3 -e ansible_pipelining=true -m ansible.builtin.ping
