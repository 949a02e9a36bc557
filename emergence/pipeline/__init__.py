"""Pipeline: `emergence pipeline run|graph|validate`, a DAG of hermetic CI
stages run in containers from store images, cached by content address.

  commands.py   the verb and its sub-commands
  spec.py       the pipeline file (TOML/JSON): load and validate before anything runs
  inputs.py     a stage's declared inputs: a Merkle tree of file digests, stat-cached
  cache.py      key -> outputs tar + log, blobs in image.store.Store, a small index
  execute.py    one stage in one container: bundle, read-only inputs, scratch dir, timeout
  schedule.py   the DAG: parallel up to --jobs, fail-fast or --keep-going, retries
  watch.py      what outlives the runner: run dirs, PDEATHSIG children, the watcher
  shared.py     the cache shared with peers: signed tags (action cache), store blobs (CAS)
  dispatch.py   --cluster: each stage a signed placement task, its result read back by digest
  stagetask.py  the `stage` task: what it carries, what a worker checks and does with it
  report.py     line output, JUnit, JSON, GitHub Actions / GitLab extras, secrets masked
  graph.py      the DAG as text or DOT

May import: the top-level helpers, runtime/ (through the `emergence` command
it runs per stage), image/ (Store, build, image_bundle, nix.search_path) and
the functions share/__init__.py exports (config, pull_image), only with --share
or --cluster; with --cluster, place/ (tasks.submit, its cluster client).
place/worker.py and cluster/policy.py call stagetask.py for the `stage` kind.
"""
