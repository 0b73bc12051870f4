"""harness: the experiment machinery around the components. Scripts run from the repository root
as modules: `python -m harness.report`, `python -m harness.phase`, `python -m harness.select_tasks`,
`python -m harness.bench`, `python -m harness.gpu_check`."""
