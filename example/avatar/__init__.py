"""The seed tutorial's avatar uploader ("file upload with live progress"), resumable."""
