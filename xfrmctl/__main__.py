"""`python -m xfrmctl`: the same as the `xfrmctl` console script (fast path, then typer)."""

from xfrmctl.fastcli import main

main()
