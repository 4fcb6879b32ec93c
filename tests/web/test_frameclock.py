"""web/js/frameclock.js in real Chromium: one callback per presented frame of a playing video."""

from __future__ import annotations

from playwright.sync_api import Page


def test_frame_callbacks_come_while_the_camera_plays_and_stop_when_told(module_page: Page) -> None:
    got = module_page.evaluate(
        """async () => {
          const { onEachFrame, wallNowMs } = await import("/js/frameclock.js");
          const video = document.createElement("video");
          video.muted = true;
          document.body.append(video);
          video.srcObject = await navigator.mediaDevices.getUserMedia({ video: true });
          await video.play();
          let frames = 0, sized = 0;
          const stop = await new Promise((resolve) => {
            const stopper = onEachFrame(video, (meta) => {
              frames += 1;
              if (meta && meta.width > 0) sized += 1;
              if (frames === 5) resolve(stopper);
            });
          });
          stop();
          const atStop = frames;
          await new Promise((r) => setTimeout(r, 300));
          video.srcObject.getTracks().forEach((t) => t.stop());
          return { atStop, after: frames, sized, skew: Math.abs(wallNowMs() - Date.now()) };
        }"""
    )
    assert got["atStop"] == 5 and got["after"] == 5
    assert got["sized"] == 5  # requestVideoFrameCallback (not the rAF fallback) in Chromium
    assert got["skew"] < 1000  # the page's clock is the wall clock the server stamps frames with
