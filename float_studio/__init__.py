"""FLOAT Studio: the Gradio app's logic, next to ``app.py`` (the engine, ``float_core``, never
imports this package, Gradio or plotly).

Modules:
    state     per-session state: settings, sessions, caches, the shared pipeline holder
    plots     plotly figures (lambda(t), speech emotion) and slider ranges
    ui        the Studio tab's layout and wiring
    live      the Live tab (streaming)
    call      the Call tab and its HTTP routes
    server    how ``app.py`` serves the Blocks app
"""
