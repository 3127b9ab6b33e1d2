//! lb-proxy

pub mod nginx_conf;
