"""The container metrics, with cAdvisor's names, types and label sets.

Every series also carries cAdvisor's base labels `id` (the cgroup path), `name`
and `image`; EXTRA lists the labels a metric adds (cAdvisor's, e.g. `cpu`,
`interface`, `device`).  Units follow cAdvisor: seconds and bytes.
"""

BASE_LABELS = ("id", "image", "name")

# name: (type, help, extra labels)
METRICS = {
    "container_cpu_usage_seconds_total": ("counter", "Cumulative cpu time consumed in seconds.",
                                          ("cpu",)),
    "container_cpu_user_seconds_total": ("counter", "Cumulative user cpu time consumed in "
                                         "seconds.", ()),
    "container_cpu_system_seconds_total": ("counter", "Cumulative system cpu time consumed in "
                                           "seconds.", ()),
    "container_cpu_cfs_periods_total": ("counter", "Number of elapsed enforcement period "
                                        "intervals.", ()),
    "container_cpu_cfs_throttled_periods_total": ("counter", "Number of throttled period "
                                                  "intervals.", ()),
    "container_cpu_cfs_throttled_seconds_total": ("counter", "Total time duration the "
                                                  "container has been throttled.", ()),
    "container_memory_usage_bytes": ("gauge", "Current memory usage in bytes, including all "
                                     "memory regardless of when it was accessed", ()),
    "container_memory_working_set_bytes": ("gauge", "Current working set in bytes.", ()),
    "container_memory_rss": ("gauge", "Size of RSS in bytes.", ()),
    "container_memory_cache": ("gauge", "Number of bytes of page cache memory.", ()),
    "container_memory_failcnt": ("counter", "Number of memory usage hits limits", ()),
    "container_oom_events_total": ("counter", "Count of out of memory events observed for "
                                   "the container", ()),
    "container_spec_memory_limit_bytes": ("gauge", "Memory limit for the container.", ()),
    "container_spec_cpu_quota": ("gauge", "CPU quota of the container.", ()),
    "container_spec_cpu_period": ("gauge", "CPU period of the container.", ()),
    "container_spec_cpu_shares": ("gauge", "CPU share of the container.", ()),
    "container_processes": ("gauge", "Number of processes running inside the container.", ()),
    "container_threads": ("gauge", "Number of threads running inside the container", ()),
    "container_fs_reads_bytes_total": ("counter", "Cumulative count of bytes read",
                                       ("device",)),
    "container_fs_writes_bytes_total": ("counter", "Cumulative count of bytes written",
                                        ("device",)),
    "container_network_receive_bytes_total": ("counter", "Cumulative count of bytes received",
                                              ("interface",)),
    "container_network_receive_packets_total": ("counter", "Cumulative count of packets "
                                                "received", ("interface",)),
    "container_network_receive_errors_total": ("counter", "Cumulative count of errors "
                                               "encountered while receiving", ("interface",)),
    "container_network_receive_packets_dropped_total": ("counter", "Cumulative count of "
                                                        "packets dropped while receiving",
                                                        ("interface",)),
    "container_network_transmit_bytes_total": ("counter", "Cumulative count of bytes "
                                               "transmitted", ("interface",)),
    "container_network_transmit_packets_total": ("counter", "Cumulative count of packets "
                                                 "transmitted", ("interface",)),
    "container_network_transmit_errors_total": ("counter", "Cumulative count of errors "
                                                "encountered while transmitting",
                                                ("interface",)),
    "container_network_transmit_packets_dropped_total": ("counter", "Cumulative count of "
                                                         "packets dropped while transmitting",
                                                         ("interface",)),
    "container_start_time_seconds": ("gauge", "Start time of the container since unix epoch "
                                     "in seconds.", ()),
    "container_last_seen": ("gauge", "Last time a container was seen by the exporter", ()),
}
for _res in ("cpu", "memory", "io"):
    for _kind in ("waiting", "stalled"):
        METRICS[f"container_pressure_{_res}_{_kind}_seconds_total"] = (
            "counter", f"Total time duration tasks in the container have {_kind} due to "
            f"{_res} congestion.", ())
