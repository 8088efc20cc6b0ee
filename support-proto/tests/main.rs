//! Integration tests of remote support: real TLS with a CA made in the test,
//! the cloud's relay on 127.0.0.1, real Noise, real files. The only double
//! is the [`support::common::TestAuthorizer`], standing in for the host's broker.

mod support;
