// FLOAT Studio "Call" tab: the browser side of a WebRTC call with the portrait.
// Runs as the gr.HTML component's js_on_load (`element` is the component's root) and defines
// window.floatCall = {start, hangup}, which the Call / Hang up buttons invoke. Protocol
// (docs/call.md): GET call/config for the ICE servers, then POST call/offer with the
// complete offer (no trickle ICE) and apply the answer; events arrive on the "events" channel.
(() => {
  const $ = (id) => element.querySelector("#" + id);
  const ui = {
    video: $("float-call-video"), state: $("float-call-state"), latency: $("float-call-latency"),
    fps: $("float-call-fps"), speaking: $("float-call-speaking"), error: $("float-call-error"),
    transcript: $("float-call-transcript"), countdown: $("float-call-countdown"), warning: $("float-call-warning"),
  };
  const COUNTDOWN_S = 30; // the last seconds of a call are counted down (FLOAT_MAX_LIVE_SECONDS)
  let call = null; // {pc, mic, channel, id, mode}

  // The app's base URL (Gradio may be mounted under a sub-path).
  const base = () => {
    const root = (window.gradio_config && window.gradio_config.root) || window.location.href;
    return new URL(".", root.endsWith("/") ? root : root + "/");
  };
  const url = (path) => new URL(path, base()).toString();

  function setState(state) {
    ui.state.textContent = state;
    ui.state.dataset.state = state;
  }
  function showError(message) { ui.error.textContent = message || ""; }

  function addLine(role, text, turn) {
    const li = document.createElement("li");
    li.dataset.role = role;
    if (turn !== undefined) li.dataset.turn = turn;
    li.textContent = (role === "user" ? "You: " : (call && call.name ? call.name : "Portrait") + ": ") + text;
    ui.transcript.appendChild(li);
    ui.transcript.scrollTop = ui.transcript.scrollHeight;
  }

  function onEvent(ev) {
    if (ev.type === "state") {
      setState(ev.state);
      if (ev.state === "closed") ui.countdown.textContent = "";
      if (ev.state === "closed" && ev.reason && !/hung up/.test(ev.reason)) showError("Call ended: " + ev.reason);
    } else if (ev.type === "transcript") {
      addLine(ev.role, ev.text, ev.turn);
    } else if (ev.type === "barge_in") {
      ui.transcript.querySelectorAll(`li[data-role="assistant"][data-turn="${ev.turn}"]`)
        .forEach((li) => { li.classList.add("interrupted"); li.textContent += " (interrupted)"; });
    } else if (ev.type === "error") {
      showError(ev.message);
    } else if (ev.type === "answer_started") {
      ui.latency.textContent = `${ev.answer_latency_ms} ms (end of question → first answer frame)`;
    } else if (ev.type === "stats") {
      const f = ev.frames || {};
      ui.fps.textContent = `${f.fps ?? "-"} fps, ${f.shown ?? 0} shown, ${f.stalls ?? 0} late`;
      if (ev.av_delay_ms != null) {
        ui.latency.textContent = `A/V delay ${ev.av_delay_ms} ms (p90 ${ev.av_delay_p90_ms} ms; speech in → mouth out)`;
      }
      ui.speaking.textContent = ev.speaking ? "Speaking" : "Idle";
      ui.countdown.textContent = ev.remaining_s != null && ev.remaining_s <= COUNTDOWN_S
        ? `The call ends in ${Math.ceil(ev.remaining_s)} s (calls last at most ${ev.max_seconds} s).` : "";
      ui.warning.textContent = ev.realtime || ""; // generation slower than real time: the delay to expect
    }
  }

  async function portraitDataURL(portrait) {
    const src = portrait && (portrait.url || (portrait.path && url("gradio_api/file=" + portrait.path)));
    if (!src) throw new Error("Pick a portrait first.");
    const blob = await (await fetch(src)).blob();
    return await new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(new Error("The portrait could not be read."));
      reader.readAsDataURL(blob);
    });
  }

  function gathered(pc, ms) { // the server takes the offer with all candidates (no trickle)
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, ms);
    });
  }

  async function start(portrait, mode, name, systemPrompt, emotion, aCfg, eCfg, nfe, seed, crop, idle) {
    await hangup();
    showError("");
    ui.transcript.innerHTML = "";
    ui.latency.textContent = "-";
    ui.fps.textContent = "-";
    ui.countdown.textContent = ui.warning.textContent = "";
    setState("starting");
    const c = call = { mode, name };
    try {
      const image = await portraitDataURL(portrait);
      const cfgRes = await fetch(url("call/config"));
      if (!cfgRes.ok) throw new Error("The call service is not available on this server (HTTP " + cfgRes.status + ").");
      const cfg = await cfgRes.json();
      if (cfg.available === false) throw new Error(cfg.reason);
      if (mode === "assistant" && !cfg.assistant.available) throw new Error(cfg.assistant.reason);
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia)
        throw new Error("This page cannot use the microphone (it needs https or localhost).");
      c.mic = await navigator.mediaDevices.getUserMedia(
        { audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 } });
      const pc = c.pc = new RTCPeerConnection({ iceServers: cfg.ice_servers });
      c.mic.getAudioTracks().forEach((t) => pc.addTrack(t, c.mic));
      pc.addTransceiver("video", { direction: "recvonly" });
      c.channel = pc.createDataChannel("events");
      c.channel.onmessage = (e) => { if (call === c) onEvent(JSON.parse(e.data)); };
      const remote = new MediaStream();
      pc.ontrack = (e) => {
        remote.addTrack(e.track);
        ui.video.srcObject = remote;
        ui.video.play().catch(() => {});
      };
      pc.onconnectionstatechange = () => { if (call === c) setState(pc.connectionState); };
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc, 3000);
      const body = {
        sdp: pc.localDescription.sdp, type: "offer", mode, portrait: image, name,
        system_prompt: systemPrompt, emotion: emotion === "auto" ? null : emotion,
        a_cfg: aCfg, e_cfg: eCfg, nfe: Math.round(nfe), seed: seed == null || seed < 0 ? null : Math.round(seed),
        crop, idle,
      };
      setState("calling");
      const res = await fetch(url("call/offer"), {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      const answer = await res.json().catch(() => ({ error: "HTTP " + res.status }));
      if (!res.ok) throw new Error(answer.error || "HTTP " + res.status);
      if (call !== c) return;
      c.id = answer.id;
      await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
    } catch (err) {
      showError(err && err.message ? err.message : String(err));
      await hangup();
      setState("failed");
    }
  }

  async function hangup() {
    const c = call;
    call = null;
    if (!c) return;
    try { if (c.channel && c.channel.readyState === "open") c.channel.send("hangup"); } catch (e) { /* closing */ }
    if (c.id) fetch(url("call/" + c.id), { method: "DELETE" }).catch(() => {});
    if (c.pc) c.pc.close();
    if (c.mic) c.mic.getTracks().forEach((t) => t.stop());
    ui.video.srcObject = null;
    setState("closed");
  }

  window.floatCall = { start, hangup };
  window.addEventListener("beforeunload", () => { hangup(); });
})();
