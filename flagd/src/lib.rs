//! flagd
