"""web/js/peer.js in real Chromium: the camera track, codec preference and non-trickle ICE."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page

OFFER_SCRIPT = """async (codec) => {
  const { openCamera, createOffer } = await import("/js/peer.js");
  const stream = await openCamera();
  const track = stream.getVideoTracks()[0];
  const { pc, sdp } = await createOffer(track, stream, { codec, iceTimeoutMs: 5000 });
  const result = { sdp, hint: track.contentHint, gathering: pc.iceGatheringState };
  pc.close();
  track.stop();
  return result;
}"""


def first_video_codec(sdp: str) -> str:
    """The codec name of the first payload type on the m=video line (the one the offer prefers)."""
    m_line = re.search(r"^m=video \d+ \S+ (\d+)", sdp, re.MULTILINE)
    assert m_line, sdp
    rtpmap = re.search(rf"^a=rtpmap:{m_line.group(1)} ([^/]+)/", sdp, re.MULTILINE)
    assert rtpmap, sdp
    return rtpmap.group(1)


@pytest.mark.parametrize(("codec", "expected"), [("h264", "H264"), ("vp8", "VP8")])
def test_offer_prefers_the_forced_codec_and_carries_all_candidates(
    module_page: Page, codec: str, expected: str
) -> None:
    got = module_page.evaluate(OFFER_SCRIPT, codec)
    assert first_video_codec(got["sdp"]) == expected
    assert got["hint"] == "detail"
    # Non-trickle: gathering finished before the offer was taken, so candidates are inside it.
    assert got["gathering"] == "complete"
    assert "a=candidate:" in got["sdp"]
    assert "a=sendonly" in got["sdp"]


def test_unknown_codec_is_not_forced(module_page: Page) -> None:
    forced = module_page.evaluate(
        """async () => {
          const { preferCodec } = await import("/js/peer.js");
          const pc = new RTCPeerConnection();
          const forced = preferCodec(pc.addTransceiver("video"), "nosuchcodec");
          pc.close();
          return forced;
        }"""
    )
    assert forced is False


def test_ice_wait_gives_up_after_its_timeout(module_page: Page) -> None:
    complete = module_page.evaluate(
        """async () => {
          const { iceGatheringComplete } = await import("/js/peer.js");
          const stuck = new EventTarget();
          stuck.iceGatheringState = "gathering";
          return iceGatheringComplete(stuck, 50);
        }"""
    )
    assert complete is False


def test_negotiated_codec_is_empty_without_media(module_page: Page) -> None:
    codec = module_page.evaluate(
        """async () => {
          const { negotiatedCodec } = await import("/js/peer.js");
          const pc = new RTCPeerConnection();
          const codec = await negotiatedCodec(pc);
          pc.close();
          return [codec, await negotiatedCodec(null)];
        }"""
    )
    assert codec == ["", ""]
