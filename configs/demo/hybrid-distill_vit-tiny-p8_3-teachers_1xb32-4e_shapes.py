# The CPU demo's Hybrid Distillation from three teachers, epoch-based: the
# supervised demo teacher's features, a DINOv2-style teacher's features (an
# mmpretrain VisionTransformer with layer scale and 7-px patches, built and
# loaded by mmpretrain through ZooTeacher; it sees 56-px images so that its
# 8x8 tokens line up with the student's) and the MAE demo teacher's
# relations. Each target logs its own loss (loss_feat_sup, loss_feat_dino,
# loss_rel_mae). Tests: tests/test_tools/test_train_three_teachers.py.
_base_ = ['./hybrid-distill_vit-tiny-p8_1xb32-4e_shapes.py']

dino_teacher_ckpt = 'work_dirs/demo/teacher_dino/backbone.pth'

model = dict(
    _delete_=True,
    type='HybridDistill',
    data_preprocessor={{_base_.model.data_preprocessor}},
    backbone={{_base_.model.backbone}},
    init_cfg={{_base_.model.init_cfg}},
    teachers=dict(
        sup=dict(
            teacher={{_base_.model.teacher_feat}},
            feature=dict(
                neck={{_base_.model.neck}}, loss={{_base_.model.loss_feat}})),
        dino=dict(
            teacher=dict(
                type='ZooTeacher',
                model=dict(
                    type='VisionTransformer',
                    arch={{_base_.tiny_arch}},
                    img_size=56,
                    patch_size=7,
                    layer_scale_init_value=1e-5),
                checkpoint=dino_teacher_ckpt),
            feature=dict(
                neck={{_base_.model.neck}},
                loss={{_base_.model.loss_feat}},
                tokens='all'),
            grid='resize'),
        mae=dict(
            teacher={{_base_.model.teacher_rel}},
            relation=dict(loss={{_base_.model.loss_rel}}))),
    importance_source='dino')

custom_hooks = [
    dict(type='ProgressiveMaskingHook', final_ratio=0.5, schedule='linear'),
    dict(type='PreemptionHook', interval=3),
    # every teacher's attention once (attn_*/sup_, dino_, mae_layerII), the
    # student's at each epoch end against the relation teacher (mae)
    dict(type='AttentionDiversityHook', num_images=8),
]
