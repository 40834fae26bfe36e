"""data stage: frames and labels from synthetic street video (default), Cityscapes sequences, any video.

Import the module that holds what you need: data.frames (Frame, FrameSource), data.streams (video
files, image folders, cameras), data.sources (any of them from a spec string), data.flow (DIS optical
flow), data.cityscapes, data.classes (the 19 Cityscapes classes), data.synthetic (the renderer).
This package imports none of them, so the runtime, which needs frames and flow only, never loads the
renderer or cityscapesscripts. No torch here: the runtime imports data/ on a Jetson.
"""
