//! Peak resident memory of the pipeline's processes: `VmHWM` in `/proc/<pid>/status`, reset at the
//! start of a run by writing `5` to `/proc/<pid>/clear_refs` (Linux ≥ 4.0).

/// A process to watch, given on the command line as `name=pid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
}

/// Parses `name=pid`.
pub fn parse_watched(text: &str) -> Result<Watched, String> {
    let (name, pid) = text.split_once('=').ok_or("expected NAME=PID")?;
    let pid = pid.parse().map_err(|_| format!("not a pid: {pid}"))?;
    if name.is_empty() {
        return Err("expected NAME=PID".to_owned());
    }
    Ok(Watched {
        name: name.to_owned(),
        pid,
    })
}

/// `VmHWM` in kB from the text of `/proc/<pid>/status`.
pub fn vm_hwm_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse().ok())
}

/// Resets the peak so that it covers what follows; false when the kernel refused.
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// The peak RSS of `pid` in kB, if the process is alive and readable.
pub fn peak_kb(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .as_deref()
        .and_then(vm_hwm_kb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_hwm() {
        let status =
            "Name:\tswitchboard-ing\nVmPeak:\t  812340 kB\nVmHWM:\t   41236 kB\nVmRSS:\t   40000 kB\n";
        assert_eq!(vm_hwm_kb(status), Some(41_236));
        assert_eq!(vm_hwm_kb("Name:\tx\n"), None);
    }

    #[test]
    fn parses_name_equals_pid() {
        assert_eq!(
            parse_watched("ingest=4242"),
            Ok(Watched {
                name: "ingest".to_owned(),
                pid: 4242
            })
        );
        assert!(parse_watched("ingest").is_err());
        assert!(parse_watched("=1").is_err());
        assert!(parse_watched("sink=x").is_err());
    }

    #[test]
    fn reads_its_own_peak() {
        assert!(peak_kb(std::process::id()).is_some_and(|kb| kb > 0));
    }
}
