//! Unit tests of the facade's internals (the ensemble, the automatic κ, the evaluation's
//! imputers), which are not public API, on data simulated from the gimVI model.

mod common;
mod ensemble;
mod intervals;
mod kappa;
mod prepare;
