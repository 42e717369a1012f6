"""asyncio glue joining the IKE engine, the kernel layer and the control socket."""
