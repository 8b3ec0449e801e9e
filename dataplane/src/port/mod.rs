pub mod bpf;
pub mod ethtool;
pub mod xdp_filter;
