"""`latentwalk ui`: a page and a job API over the same render engine (the extra latentwalk[ui]).

- store.py: the jobs and their states, durable in SQLite under --outputs;
- jobs.py: a job (a `batch` job table as JSON) checked, turned into its command line, and run
  by one worker thread, with progress, cancel and resume;
- app.py: the FastAPI app: the job API, Server-Sent Events, files, and the security checks
  (loopback by default, a token elsewhere, Host and Origin checked);
- static/: the page, plain HTML, JS and CSS.
"""
