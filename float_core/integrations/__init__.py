"""Adapters that plug :class:`~float_core.avatar.LiveAvatar` into agent frameworks.

Each adapter lives in its own module and imports its framework there, so importing
``float_core`` never imports a framework: :mod:`float_core.integrations.pipecat` needs the
optional extra ``[agents]`` (``pip install "float-studio[agents]"``, which installs pipecat-ai).
"""
