//! placeholder: filled by the reset_race work
