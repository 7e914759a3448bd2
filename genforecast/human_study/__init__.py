"""DesIGN's human evaluation as a tool: a self-hosted rating study for generated designs.

One module per concern: ``config`` (the study file and its wording), ``create`` (generation, controls, automatic
scores, the study folder), ``storage`` (SQLite in WAL mode), ``assignment`` (who rates what), ``security`` and
``app`` (the web app), ``serve`` (uvicorn), ``export``, ``statistics`` and ``report`` (the paper's numbers and
pictures), ``simulate`` (raters with known preferences), ``demo`` (the study of ``make human-study``) and ``cli``.
"""
