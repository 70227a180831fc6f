"""HTTP serving: an OpenAI-compatible chat API over slides, Deep Zoom tiles and a web slide viewer.

Entry points: `omnipath_lvlm.serve.app.create_app` / `run_server` and the
``omnipath serve`` command (`omnipath_lvlm.serve.cli`). Heavy imports stay in
the submodules so importing this package is cheap.
"""
