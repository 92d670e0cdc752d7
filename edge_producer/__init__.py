"""Edge producer: video in (RTSP, file, synthetic scene), frames and heartbeats out."""
