// Audio worklet of the push-to-talk recorder: hands the microphone's samples, mixed to
// mono, to the page in blocks; "flush" sends what is left and then {flushed: true}.

const BLOCK_FRAMES = 4096;

class PcmRecorder extends AudioWorkletProcessor {
  constructor() {
    super();
    this.block = new Float32Array(BLOCK_FRAMES);
    this.filled = 0;
    this.port.onmessage = (event) => {
      if (event.data === "flush") {
        this.send();
        this.port.postMessage({ flushed: true });
      }
    };
  }

  send() {
    if (this.filled > 0) {
      this.port.postMessage(this.block.slice(0, this.filled));
      this.filled = 0;
    }
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const frames = channels[0].length;
    for (let i = 0; i < frames; i++) {
      let sum = 0;
      for (const channel of channels) sum += channel[i];
      this.block[this.filled++] = sum / channels.length;
      if (this.filled === BLOCK_FRAMES) this.send();
    }
    return true;
  }
}

registerProcessor("pcm-recorder", PcmRecorder);
