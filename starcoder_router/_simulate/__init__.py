"""Know the bill before paying it: replay a workload through the router's own routing and
budget logic on a simulated clock, with no network, and compare policies side by side.

    starcoder-router workload from-code ~/src/project --requests 2000 > workload.jsonl
    starcoder-router simulate workload.jsonl --config router.toml --report report.html
"""
