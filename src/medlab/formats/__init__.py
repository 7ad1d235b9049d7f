"""Readers for public data formats, each returning medlab's own types.

    text           opening a user's file: UTF-8 with or without BOM, encoding key, empty files
    dialogues      doctor-patient corpora (MedDialog, cMedQA2, DISC-Med-SFT)
    mcq            multiple-choice exams (CMB-Exam, CMExam, MedQA, MedMCQA, C-Eval, CMMLU)
    instructions   SFT / chat sets (alpaca, MOSS, ShareGPT, HuatuoGPT-II, DISC-Med-SFT)
    cases          clinical cases with question chains (CMB-Clin)
    peek           pre-flight: a configured file's first records through its reader
    params         the params entries naming a file, its format and encoding

Every reader names the file and line of a bad record.
"""


class FormatError(ValueError):
    """A file that does not match its declared format; the message names file and line."""
