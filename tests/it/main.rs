//! All integration tests, in one binary (one link, one place to look).

mod golden;
mod schema;
mod util;
mod window_props;
