"""FLOAT Studio: the Gradio app's logic, next to ``app.py`` (the engine, ``float_core``, never
imports this package, Gradio or plotly).

Modules:
    state     per-session state: settings (SamplingConfig from the widgets), sessions, versioned
              generations, the bounded CPU cache, shared example analyses, Stop per action
    model     the one pipeline of the process (PipelineHolder: lazy, shared, retried)
    handlers  what each Studio event does, as plain functions (no Gradio)
    plots     plotly figures (lambda(t) generated vs edited, emotion bars and timeline),
              direction labels and slider ranges
    ui        the Studio tab: layout, handlers, wiring, and the motion-editing panel it shares
    video_tab the Video tab (a video as input: drive, head from video, dub): handlers and layout
    live      the Live tab (streaming)
    gpu       ZeroGPU: the one wrapper for handlers that run the model (gpu_handler)
    limits    bounded work per visitor (FLOAT_MAX_SECONDS, FLOAT_MAX_LIVE_SECONDS, FLOAT_MAX_UPLOAD_MB)
    speed     measured throughput, time estimates, the below-real-time warning
    call      the Call tab and its HTTP routes
    server    how ``app.py`` serves the Blocks app
"""
