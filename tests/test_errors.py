"""A mistyped option is refused in one line naming the option and the ones there are."""
from __future__ import annotations

import pytest

from speech_peft.adapters import config_from_dict
from speech_peft.data.datamodule import ManifestDataModule
from speech_peft.encoders.state_masking import StateMasking
from speech_peft.errors import UserError, dataclass_options


def test_a_mistyped_option_names_where_it_was_given_and_the_options_there_are(fsdd_folds):
    with pytest.raises(UserError, match=r"task.state_masking: no option\(s\) \['time_mask'\]; its options are "
                                        r"\['time_masks', 'max_time'"):
        dataclass_options(StateMasking, {"time_mask": 2}, "task.state_masking")
    assert dataclass_options(StateMasking, {"time_masks": 3}, "task.state_masking") == StateMasking(time_masks=3)
    with pytest.raises(UserError, match=r"adapter \(LoRAConfig\): no option\(s\) \['rr'\]; its options are \[.*'r'"):
        config_from_dict({"method": "lora", "rr": 8})
    fold = fsdd_folds / "fold_theo"
    data = ManifestDataModule(train=str(fold / "train.jsonl"), augment={"p": 1.0, "speed": [0.9, 1.1]})
    with pytest.raises(UserError, match=r"data.augment: no option\(s\) \['speed'\]; its options are \[.*'speeds'"):
        data._dataset("train")
