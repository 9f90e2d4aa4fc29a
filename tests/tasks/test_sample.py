"""`ganflow sample`'s argument checks: a clear one-line error before any registry is contacted."""

import pytest

from gan_model.errors import UsageError
from tasks.sample import sample_images


@pytest.mark.parametrize("out,kwargs,needle", [
    ("walk.gif", {"texture_scale": 2}, "--texture-scale renders still textures from seeds: use --out texture.png"),
    ("t.png", {"texture_scale": 2, "z_file": "z.npy"}, "leave out --z"),
    ("t.png", {"texture_scale": 0}, "--texture-scale 0: use a whole number >= 1"),
])
def test_texture_options_that_cannot_work_are_refused_with_the_fix(out, kwargs, needle, tmp_path):
    with pytest.raises(UsageError, match=needle) as err:
        sample_images("models:/unreachable@champion", None, tmp_path / out, **kwargs)
    assert "\n" not in str(err.value)
