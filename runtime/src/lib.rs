//! weir runtime
