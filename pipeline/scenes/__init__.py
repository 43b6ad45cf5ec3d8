"""Embedded procedural scene kit: street / yard / lot backgrounds with exact z-depth, and
anti-aliased foreground cut-outs (cars, people, street furniture, animals, boxes, plants, free-form
objects; lit, grained, some defocused, with contact shadows). Every asset is a pure function of (index, seed).

    from pipeline.scenes import render_backgrounds, render_foregrounds, FAR_M
    bgs = render_backgrounds(102, seed=0)      # Background(image BGR uint8, depth_m float32, horizon_row)
    fgs = render_foregrounds(104, seed=0)      # (h, w, 4) uint8 BGRA
"""
from .backgrounds import FAR_M, Background, Box, Ground, Scene, Sky, build_scene, render_background, \
    render_backgrounds, render_scene
from .camera import Camera, ground_depth, horizon_row, nominal_focal_px, pixel_rays, ray_through
from .foregrounds import foreground_kind, foreground_width_m, render_foreground, render_foregrounds

# Bump when the rendered pixels change, so built datasets record which generator made them.
# 2: the widened object kit (figures.py, effects.py); 1: cars, bicycles and bins only.
GENERATOR_VERSION = "2"

__all__ = [
    "FAR_M", "GENERATOR_VERSION", "Background", "render_background", "render_backgrounds",
    "render_foreground", "render_foregrounds", "foreground_kind", "foreground_width_m", "nominal_focal_px",
    # lower-level pieces, for tests and tools
    "Box", "Camera", "Ground", "Scene", "Sky", "build_scene", "ground_depth", "horizon_row", "pixel_rays",
    "ray_through", "render_scene",
]
