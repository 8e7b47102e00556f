"""yolo-edge's developer tools: demo, export, bench (and its worker and report), random-weights model
generation, sample images and videos, a local Mosquitto. Installed with `pip install 'yolo-edge[tools]'`;
never imported by the runtime package `yolo_edge`."""
