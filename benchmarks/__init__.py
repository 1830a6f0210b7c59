"""The benchmark suite: what our client costs beside llama-server, the openai client and requests.

Run it with `python -m benchmarks` (or `tox -e bench`); `--quick` is the short
run CI uses to check that it works. Every figure is the median of several runs
with their min and max, and every ratio is taken pair by pair within one run.
"""
