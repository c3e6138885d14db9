//! One file per command.

pub mod bench;
pub mod bundle;
pub mod check;
pub mod commit;
pub mod create;
pub mod diff;
pub mod du;
pub mod export;
pub mod gc;
pub mod history;
pub mod images;
pub mod import;
pub mod info;
pub mod layers;
pub mod mount;
pub mod output_file;
pub mod ps;
pub mod rm;
pub mod rmi;
pub mod run;
pub mod save;
pub mod tag;
