"""The spoken question as a file the Whisper deployment decodes, checked cheaply first.

Whisper decodes every format itself (PyAV: WAV of any rate, width and channel count,
Ogg/Opus, WebM, MP3, FLAC) and resamples to 16 kHz mono, so the audio is not decoded
here: a WAV file or a compressed one goes to Whisper as it came, and raw PCM is only
given a WAV header. What can be checked without decoding is checked here, so a bad
request fails before any model is called: PCM with an odd byte count, a WAV file whose
header says a rate outside the accepted range, or audio longer than the limit.
"""

from __future__ import annotations

import io
import wave

from handler_base.audio import encode_wav
from handler_base.errors import InvalidRequestError, TooLargeError
from handler_base.messages import VoiceRequest

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
"""The rates accepted, for WAV as for raw PCM (VoiceRequest's ``sample_rate`` bounds)."""
DEFAULT_MAX_AUDIO_S = 300.0
"""The longest question accepted, in seconds, where the audio says its length cheaply."""


def audio_file_of(request: VoiceRequest, max_audio_s: float = DEFAULT_MAX_AUDIO_S) -> bytes:
    """The bytes to transcribe for ``request``: its file, or its raw PCM as a WAV file.

    Args:
        request: The voice request (its audio is not empty: the model checks that).
        max_audio_s: Longest duration accepted, checked for raw PCM and WAV files;
            compressed audio is held to the Whisper deployment's own limit.

    Returns:
        An audio file Whisper decodes.

    Raises:
        InvalidRequestError: PCM that is not whole 16-bit samples, or a WAV rate
            outside 8 to 192 kHz.
        TooLargeError: Longer than ``max_audio_s``.
    """
    if request.format == "pcm_s16le":
        # The model requires the rate with pcm_s16le.
        rate = request.sample_rate or 0
        if len(request.audio) % 2:
            raise InvalidRequestError(
                f"pcm_s16le audio must hold whole 16-bit samples; got {len(request.audio)} bytes"
            )
        _check_duration(len(request.audio) / 2 / rate, max_audio_s)
        return encode_wav(request.audio, rate)
    header = _wav_header(request.audio)
    if header is not None:
        rate, frames = header
        if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            raise InvalidRequestError(
                f"the WAV file's sample rate is {rate} Hz; send {MIN_SAMPLE_RATE} to "
                f"{MAX_SAMPLE_RATE} Hz"
            )
        _check_duration(frames / rate, max_audio_s)
    return request.audio


def _wav_header(data: bytes) -> tuple[int, int] | None:
    """The rate and frame count a PCM WAV file declares; None for anything else.

    Files written to a pipe declare no length (a huge or zero frame count); the
    length then comes from the bytes that are there.
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            rate, frame_bytes = wav.getframerate(), wav.getsampwidth() * wav.getnchannels()
            declared = wav.getnframes()
    except (wave.Error, EOFError):
        return None  # not PCM (e.g. float WAV): Whisper decodes it or says why not
    available = len(data) // frame_bytes if frame_bytes else 0
    return rate, min(declared, available) if declared else available


def _check_duration(seconds: float, max_audio_s: float) -> None:
    if seconds > max_audio_s:
        raise TooLargeError(
            f"the audio lasts {seconds:.1f} s; the limit is {max_audio_s:g} s per question"
        )
